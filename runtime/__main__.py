"""``python3 -m runtime`` is ``refrt``: how the runtime runs on a host where it was copied, not installed."""

import sys

from runtime.cli import main

sys.exit(main())
