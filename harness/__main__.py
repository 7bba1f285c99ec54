"""``python -m harness COMMAND ...``: every wmbench command (harness/sweep/cli.py)."""

import sys

from harness.sweep.cli import main

sys.exit(main())
