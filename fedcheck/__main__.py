"""``python -m fedcheck`` is the same as the ``fedcheck`` console script."""

from __future__ import annotations

from fedcheck.cli.main import main

raise SystemExit(main())
