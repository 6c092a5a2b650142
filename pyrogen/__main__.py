"""``python -m pyrogen``: the same as the ``pyrogen`` command."""

from __future__ import annotations

from pyrogen.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
