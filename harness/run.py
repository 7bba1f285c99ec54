"""``python -m harness.run SWEEP.yaml ...``: the main job, kept as the README's and Makefile's entry point."""

import sys

from harness.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
