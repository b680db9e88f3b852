from narration.cli import main

raise SystemExit(main())
