from ml_tasks.core.resources import limit_thread_pools

# Before numpy, torch and LightGBM are imported: their thread pools are sized once, at import.
try:
    limit_thread_pools()
except ValueError as exc:  # a bad REFIT_TRAINER_THREADS: say which setting, not a traceback
    raise SystemExit(f"error: {exc}") from None

from ml_tasks.cli import main

raise SystemExit(main())
