from ml_tasks.cli import main

raise SystemExit(main())
