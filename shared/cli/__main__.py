"""`python -m shared.cli`: the same as `vbm`."""

from shared.cli.app import main

raise SystemExit(main())
