from keysync.cli import main

raise SystemExit(main())
