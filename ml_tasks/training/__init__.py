"""Train one candidate (tuning, calibration, learning curve, warm start) and backtest its recipe on
time-shifted folds."""
