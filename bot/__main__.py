"""`python -m bot` runs the command-line tool."""

from bot.cli import main

raise SystemExit(main())
