"""Data-parallel training with TensorFlow's own engine, `tf.distribute`.

Every replica (a GPU, a TPU core, a worker machine) holds a copy of the decoder and
takes a slice of each global batch; the gradients are summed over replicas before the
optimizer step, so N replicas with a global batch of B train the same model as one
device with a batch of B:

* `--batch-size` is the GLOBAL batch. Each replica's loss is divided by the global
  number of words (and captions, for the attention penalty), so the summed gradient
  is the single-device gradient, however unevenly the last batch splits.
* The global gradient norm is clipped after the sum, as on one device.
* Every worker builds the same batch plan from the seed and the epoch and reads only
  the features of its own replicas' slices from the (memory-mapped) cache.
* Only the chief writes checkpoints, logs and models; the run directory must be on
  storage every worker can read, so that `--resume` finds the chief's checkpoint.

Dropout masks are drawn per replica, so runs with dropout agree with one device in
distribution, not bit for bit (with dropout 0 they agree to float rounding: tests).
"""

from __future__ import annotations

import json
import os
import socket

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name`.

    default: the current device (one GPU if there is one, else the CPU).
    mirrored: every local GPU (MirroredStrategy); on a machine without GPUs, its CPU.
    multiworker: several machines, each running the same command with its own TF_CONFIG
        (MultiWorkerMirroredStrategy; create it before any other TensorFlow work).
    tpu: a Cloud TPU found by TPUClusterResolver (TPU VMs, Colab).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Without GPUs, MirroredStrategy would use one CPU device; take every logical CPU (tests split the CPU in two).
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([device.name for device in gpus or tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs the TF_CONFIG environment variable (docs/distributed.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(f"--strategy tpu: no TPU found ({error})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; use {', '.join(STRATEGIES)}")


def split_cpu(replicas: int) -> list[str]:
    """Split the CPU into `replicas` logical devices (before TensorFlow starts): a multi-device machine to test on."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def describe(strategy: tf.distribute.Strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    name = type(strategy).__name__
    return {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}.get(name, name)


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    return strategy is not tf.distribute.get_strategy() or strategy.num_replicas_in_sync > 1


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes checkpoints and logs: the chief, or worker 0 when TF_CONFIG names no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def local_replica_ids(strategy: tf.distribute.Strategy) -> list[int]:
    """The global ids (0 .. num_replicas_in_sync - 1) of the replicas that run in this process."""
    ids = strategy.experimental_distribute_values_from_function(lambda context: context.replica_id_in_sync_group)
    return [int(i) for i in strategy.experimental_local_results(ids)]


def worker_index(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(this worker's index, number of workers): each worker runs the same number of replicas."""
    if not is_distributed(strategy):
        return 0, 1
    local = local_replica_ids(strategy)
    return local[0] // len(local), strategy.num_replicas_in_sync // len(local)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker has called this: an all-reduce waits for all of them."""
    ones = strategy.experimental_distribute_values_from_function(lambda context: tf.constant(1.0))
    strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


def global_sum(value):
    """`value` summed over all replicas (inside a replica function; unchanged outside one or on one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def local_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG values for `workers` processes on this machine (free loopback ports): to try multi-worker
    training, or test it, without a cluster."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("localhost", 0))
    cluster = {"worker": [f"localhost:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(workers)]
