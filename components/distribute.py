"""Which `tf.distribute` strategy to train under, and which process writes the outputs.

- `TF_CONFIG` naming more than one task: MultiWorkerMirroredStrategy (synchronous data-parallel
  training across processes or machines; every worker runs the same command).
- several GPUs in this process: MirroredStrategy.
- otherwise TensorFlow's default strategy (one device, no overhead).

With several workers only the chief writes the run folder (logs, samples, metrics, the best
checkpoint). Every worker takes part in saving the periodic checkpoints, as TensorFlow asks for
multi-worker training; the others write theirs to a private folder that is deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from components.errors import PipelineError


def cluster_spec_from_env() -> dict | None:
    """The parsed `TF_CONFIG`, or None when it is unset; a malformed value is a user error."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        tasks = sum(len(addresses) for addresses in spec["cluster"].values())
        spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PipelineError(
            f"TF_CONFIG is not valid ({err!r}); expected JSON like "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}.'
        ) from err
    return spec if tasks > 1 else None


def choose_strategy():
    """The strategy for this process; call it before any other TensorFlow work.

    MultiWorkerMirroredStrategy must be created at program start-up, before TensorFlow has run
    an operation, so the trainer creates it first.
    """
    import tensorflow as tf

    if cluster_spec_from_env() is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def task_of(strategy) -> tuple[str | None, int]:
    """(task type, index) of this process in a multi-worker cluster, (None, 0) otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy) -> bool:
    """The chief writes the run folder: the "chief" task, or worker 0 when there is none."""
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    resolver = strategy.cluster_resolver
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def checkpoint_write_dir(strategy, directory: Path) -> Path:
    """Where this process writes periodic checkpoints: `directory` for the chief, else a private one."""
    if is_chief(strategy):
        return directory
    task_type, task_id = task_of(strategy)
    return directory / f".{task_type}-{task_id}"


def chief_first(strategy, work: Callable[[], None]) -> None:
    """Run `work` (preparing the run folder) on the chief, then on every other worker once the chief
    has finished it.

    All workers leave the cluster's start-up barrier at the same moment; a worker that looked at
    the run folder while the chief was writing it would see the chief's half-written files
    (hparams.json's temporary sibling) as someone else's and stop, and the chief would then wait
    in its first collective until the coordination service reported that worker as no longer
    sending heartbeats. A one-number all-reduce is the barrier: it completes only when every
    worker has reached it, and fails on the others when the chief stopped before it.
    """
    if task_of(strategy)[0] is None:
        work()
        return
    import tensorflow as tf

    if is_chief(strategy):
        work()
        _all_reach(strategy)
        return
    try:
        _all_reach(strategy)
    except tf.errors.OpError as err:
        raise PipelineError("the chief stopped before it had prepared the run folder; its output says why.") from err
    work()


def _all_reach(strategy) -> None:
    """Return once every worker of the cluster has called this."""
    import tensorflow as tf

    one = strategy.run(tf.function(lambda: tf.constant(1.0)))
    strategy.reduce(tf.distribute.ReduceOp.SUM, one, axis=None)


def discard_worker_checkpoints(strategy, directory: Path) -> None:
    """Delete a non-chief worker's private checkpoint folder (only the chief's copy is kept)."""
    if not is_chief(strategy):
        shutil.rmtree(checkpoint_write_dir(strategy, directory), ignore_errors=True)
