from ml_tasks.resources import limit_thread_pools

# Before numpy, torch and LightGBM are imported: their thread pools are sized once, at import.
limit_thread_pools()

from ml_tasks.cli import main  # noqa: E402

raise SystemExit(main())
