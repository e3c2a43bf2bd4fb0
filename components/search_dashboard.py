"""A search as TensorBoard's HParams dashboard: `tensorboard --logdir <run>/tuner/logs`.

One TensorBoard run per row of the trials table (`logs/default`, `logs/0`, `logs/1`, ...) holds
the row's hyperparameter values (`hp_api.hparams`) and its final metrics as scalars: swd_avg
with its real-vs-real floor, and msssim (the default's row: the same values for the base
configuration, scored over its two seeds). The folder itself holds the experiment's
configuration once (`hp_api.hparams_config`): the search space as HParams domains and the three
metrics, so the HParams tab lists, filters and plots every row against the others.

The folder is derived from trials.json and written again, whole, each time the table is: event
files are appended to, never rewritten, so a resumed search that updated them in place would
show a row twice.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from components.artifacts import atomic_directory
from components.runfolder import EVAL_OBJECTIVE as OBJECTIVE

METRICS = {OBJECTIVE: "SWD x1e3 (lower is better)", f"{OBJECTIVE}_floor": "SWD of real vs real", "msssim": "MS-SSIM diversity"}


def write_dashboard(logs_dir: Path, rows: Sequence[dict[str, Any]], space: Mapping[str, Any]) -> None:
    """(Re)write `logs_dir`: the experiment configuration, then one run per row."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    shutil.rmtree(logs_dir, ignore_errors=True)
    with atomic_directory(logs_dir) as tmp:
        with _writing_to(tmp):
            hp_api.hparams_config(
                hparams=[_hparam(name, spec) for name, spec in space.items()],
                metrics=[hp_api.Metric(name, display_name=shown) for name, shown in METRICS.items()],
            )
        for row in rows:
            with _writing_to(tmp / str(row["trial_id"])):
                hp_api.hparams(
                    {name: value for name, value in row["hyperparameters"].items() if name in space},
                    trial_id=str(row["trial_id"]),
                )
                for name in METRICS:
                    if row.get(name) is not None:
                        tf.summary.scalar(name, row[name], step=row["images"])


@contextlib.contextmanager
def _writing_to(folder: Path) -> Iterator[None]:
    """Summaries in the block go to an event file in `folder`, flushed and closed after it."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder))
    try:
        with writer.as_default():
            yield
    finally:
        writer.close()


def _hparam(name: str, spec: Any):
    """A search dimension as an HParam: a range as an interval, choices as a discrete set."""
    from tensorboard.plugins.hparams import api as hp_api

    if isinstance(spec, dict):
        if isinstance(spec["min"], int) and isinstance(spec["max"], int):
            return hp_api.HParam(name, hp_api.IntInterval(spec["min"], spec["max"]))
        return hp_api.HParam(name, hp_api.RealInterval(float(spec["min"]), float(spec["max"])))
    return hp_api.HParam(name, hp_api.Discrete(list(spec)))
