"""Score every model on the same test rows, then decide whether the challenger may replace the champion."""
