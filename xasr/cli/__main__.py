"""``python -m xasr.cli``: the ``xasr`` command (the experiment engine's workers run it so)."""

import sys

from xasr.cli import main

sys.exit(main())
