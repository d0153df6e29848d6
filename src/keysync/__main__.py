from keysync.cli.entry import main

raise SystemExit(main())
