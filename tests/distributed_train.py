"""Run train.py in this process on `--cpu-replicas` logical CPU devices (a stand-in for several GPUs).

    python tests/distributed_train.py --cpu-replicas 2 -- --strategy mirrored --run-dir ...

The logical devices must be made before TensorFlow starts, hence a process of its own.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

if __name__ == "__main__":
    separator = sys.argv.index("--")
    replicas = int(sys.argv[sys.argv.index("--cpu-replicas") + 1]) if "--cpu-replicas" in sys.argv[:separator] else 1
    from captioner.utils.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    if replicas > 1:
        from captioner.training.distribute import split_cpu

        split_cpu(replicas)
    from captioner.cli import train

    sys.exit(train.main(sys.argv[separator + 1 :]))
