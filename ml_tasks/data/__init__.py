"""From warehouse to training rows: extract, validate, sample, split, backtest folds and drift,
and the seeded demo warehouse to run them against."""
