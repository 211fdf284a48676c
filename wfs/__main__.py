from wfs.cli import main

raise SystemExit(main())
