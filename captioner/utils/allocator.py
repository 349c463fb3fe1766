"""TensorFlow's pooling allocator for CPU tensors, as it uses on GPUs.

By default TensorFlow takes each CPU tensor from malloc and frees it when the op is done. glibc hands large freed
blocks back to the operating system, so every training step faults the pages of its buffers in again: on the
synthetic demo 32,663 page faults a step and half a CPU-second in the kernel every second. TensorFlow's
best-fit-with-coalescing (BFC) allocator keeps the freed blocks for the next step: the demo's step takes 107 ms
instead of 182, the shipped model's Flickr8k step trains 100 captions a second instead of 77, for a pool of
about a GiB more at the peak (`bench/RESULTS.md`).

TensorFlow reads the setting when it creates its CPU device (its first op), so it has to be set before that;
a value the user set in the environment wins.
"""

import os

POOLED_CPU_ALLOCATOR = "TF_CPU_ALLOCATOR_USE_BFC"


def use_pooled_cpu_allocator() -> None:
    os.environ.setdefault(POOLED_CPU_ALLOCATOR, "true")
