"""`python -m kling_async.emulator`: see `kling_async.emulator.main`."""

import sys

from ._command import main

sys.exit(main())
