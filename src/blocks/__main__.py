"""``python -m blocks`` is the ``blocks`` command."""

from blocks.cli import main

raise SystemExit(main())
