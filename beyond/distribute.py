"""Training on several devices or machines with tf.distribute (--distribute mirrored | multi-worker).

tf.distribute runs the same Keras training on several devices: each replica gets its share of every
batch (the global batch is --batch-size) and the replicas' gradients are summed before each step.
Building the towers and the optimizer inside strategy.scope() is all a Keras model needs. Each replica's
in-batch softmax sees only its own share of the batch as negatives, so the loss per rating is lower than
on one device; it is a different (easier) task per step, not a better model. (The tuned recipe's
implicit ALS loss is a plain sum over ratings, so the replicas' shares add up to the same loss; it is
trained so with --optimizer adam, since its own solver, alternating least squares, runs on one device.)

    1. distribution_strategy: none, MirroredStrategy, or MultiWorkerMirroredStrategy from TF_CONFIG
    2. check_tf_config: a TF_CONFIG that names the workers and this one, or a clear refusal
    3. is_chief: only the first worker prints, evaluates, logs and saves
    4. no_kernel_message: what to do when a device lacks an operation (sparse Adagrad on GPUs)

    python recommend.py --user 42 --distribute mirrored
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python recommend.py --user 42 --distribute multi-worker
"""

import json
import os

import tensorflow as tf

from beyond.guards import UsageError, failure_reason


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """TensorFlow's strategy for --distribute: none (the default, one device), mirrored (every local GPU,
    or every logical CPU device when there is no GPU) or multi-worker (the machines TF_CONFIG names).

    MultiWorkerMirroredStrategy must exist before TensorFlow runs its first operation, so the command line
    makes it before anything else."""
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "multi-worker":
        check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
    devices = ", ".join(device.split("device:")[-1] for device in strategy.extended.worker_devices)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return f"Training with MirroredStrategy on {strategy.num_replicas_in_sync} replica(s): {devices}"
    resolver = strategy.cluster_resolver
    workers = len(resolver.cluster_spec().as_dict().get("worker", []))
    return (
        f"Training with MultiWorkerMirroredStrategy on {strategy.num_replicas_in_sync} replica(s) of {workers} "
        f"workers; this is worker {resolver.task_id}, using {devices}"
    )


def check_tf_config() -> None:
    """Refuses --distribute multi-worker without a TF_CONFIG that names the workers and this one."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UsageError(
            "--distribute multi-worker needs the TF_CONFIG environment variable, naming every worker and "
            "this one's index (see docs/bigger-data.md)"
        )
    try:
        config = json.loads(text)
        workers, task = config["cluster"]["worker"], config["task"]
        valid = isinstance(workers, list) and workers and 0 <= int(task["index"]) < len(workers)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise UsageError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process prints, evaluates, logs and saves: always, except for workers other than the
    first of a multi-worker cluster, which only train their share and leave quietly."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def no_kernel_message(strategy_name: str, error: tf.errors.OpError) -> str:
    """What to tell a user whose devices lack an operation the strategy placed on them."""
    detail = failure_reason(error)
    return (
        f"training with --distribute {strategy_name} failed: an operation has no kernel on these devices "
        f"({detail[:200]}). Adagrad's sparse update is the usual one: it has no GPU kernel under "
        "MirroredStrategy (tensorflow/recommenders#138, #269). Train without --distribute, or on the CPU "
        "only (CUDA_VISIBLE_DEVICES= python recommend.py ...)."
    )
