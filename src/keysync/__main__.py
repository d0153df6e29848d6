from keysync.entry import main

raise SystemExit(main())
