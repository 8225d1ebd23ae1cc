"""`python -m fedstream` runs the CLI."""

from fedstream.cli import main

raise SystemExit(main())
