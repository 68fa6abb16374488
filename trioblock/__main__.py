"""``python -m trioblock``: the command-line interface (see ``trioblock --help``)."""

from ._cli.main import main

raise SystemExit(main())
