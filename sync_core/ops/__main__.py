"""``python -m sync_core.ops --help``."""

import logging
import sys

from sync_core.ops.cli import main

# The Azure SDKs log each failed sign-in or request at WARNING with a page of detail; the CLI reports the error
# itself, in one line.
logging.getLogger("azure").setLevel(logging.ERROR)
sys.exit(main())
