"""Import TensorFlow (and run LiteRT) without their C++ start-up chatter.

TensorFlow's C++ side prints oneDNN and CUDA notices straight to file descriptor 2 before any
Python logging setting applies ("Could not find cuda drivers", "failed call to cuInit" on every
CPU machine). The command-line tools import it with stderr pointed at a temporary file and show
that file only if the import fails. They also get TensorFlow's pooling CPU allocator (`allocator`).
"""

import contextlib
import os
import sys
import tempfile

from captioner.utils.allocator import use_pooled_cpu_allocator


def import_tensorflow_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    use_pooled_cpu_allocator()  # read when TensorFlow makes its CPU device, so even after an earlier import
    if "tensorflow" in sys.modules:
        return
    with quiet_stderr():
        import keras  # noqa: F401
        import tensorflow

        tensorflow.config.list_physical_devices()  # device set-up prints its own notices


@contextlib.contextmanager
def quiet_stderr():
    """File descriptor 2 pointed at a temporary file while the block runs; shown only if the block fails.

    For C++ notices that no Python setting reaches: TensorFlow's import, LiteRT's "Created TensorFlow Lite
    XNNPACK delegate", the converter's deprecation warnings.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
