"""Progress bars that suit where the output goes: redrawn in place on a terminal, one line when done elsewhere.

`keras.utils.Progbar` redraws itself with carriage returns and colour codes whenever Python runs on a
POSIX system (it counts the `posix` module as a sign of a live display), so a log file or a pipe
would receive every update: thousands of them per epoch. Off a terminal (a file, a pipe, a notebook)
the bar here writes one line when it finishes.
"""

from __future__ import annotations

import sys

import keras

IN_PLACE = 1  # Progbar verbosity: a bar redrawn with carriage returns
ONE_LINE = 2  # Progbar verbosity: one line when the bar finishes


def progress_bar(steps: int, stateful_metrics=(), unit_name: str = "step") -> keras.utils.Progbar:
    """A Progbar over `steps`; `stateful_metrics` are shown as given rather than averaged by the bar."""
    verbose = IN_PLACE if sys.stdout.isatty() else ONE_LINE
    return keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=list(stateful_metrics), unit_name=unit_name)
