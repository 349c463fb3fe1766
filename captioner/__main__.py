"""`python -m captioner COMMAND ...`: the `captioner` command without installing it."""

import sys

from captioner.cli import main

sys.exit(main())
