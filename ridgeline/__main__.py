"""`python -m ridgeline` runs the command line (useful from a source tree)."""

from ridgeline.cli import main

raise SystemExit(main())
