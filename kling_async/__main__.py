"""``python -m kling_async``: the ``kling-async`` command line."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
