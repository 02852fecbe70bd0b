"""From warehouse to training rows: extract, validate, sample, split, backtest folds and drift."""
