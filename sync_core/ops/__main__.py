"""``python -m sync_core.ops --help``."""

import sys

from sync_core.ops.cli import main

sys.exit(main())
