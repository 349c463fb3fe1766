"""Train a captioner: `python train.py --help` (the same as the installed `captioner train`).

With no arguments it trains the synthetic-scenes demo; see captioner/cli/train.py.
"""

import sys

from captioner.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
