"""``python3 -m runtime`` is ``refrt``: the thin client (:mod:`runtime.client`), also on a host where the runtime
was copied, not installed.

For the lean start, run this file with an isolated interpreter without ``site``: ``python3 -I -S
/path/to/runtime/__main__.py ...`` (``bin/refrt`` does that). Then the package is not on ``sys.path``; this file
puts its parent there. Nothing else is imported here: the client decides what it needs.
"""

import os
import sys

if not __package__:  # run as a file: make the package importable, and not its inside
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] == _here:
        del sys.path[0]
    sys.path.insert(0, os.path.dirname(_here))

from runtime.client import main

sys.exit(main())
