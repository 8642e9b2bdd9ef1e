from cfbox_watch.cli import main

raise SystemExit(main())
