"""Caption photos and draw where the model looked: `python predict.py --help` (the same as `captioner caption`).

    python predict.py photo.jpg --overlay-dir overlays/ --html report.html

See captioner/cli/caption.py.
"""

import sys

from captioner.cli.caption import main

if __name__ == "__main__":
    sys.exit(main())
