"""One worker of the two-process MultiWorkerMirroredStrategy test (run by tests/test_multiworker.py).

Usage: python tests/multiworker_worker.py DATA_DIR RUN_DIR WEIGHTS_OUT.npz, with TF_CONFIG set.
Trains a tiny model through `components.trainer.train` and saves every weight of G, D and the
EMA generator, so the test can compare the workers. The chief writes hparams.json slowly and the
other worker looks at the run folder meanwhile, so the test shows every time that the workers do
not race on the run folder (`components.distribute.chief_first`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from components.config import TrainConfig
from components.model import ModelConfig
from components.train_options import TrainOptions
from components.trainer import train


def widen_the_run_folder_race() -> None:
    """Make the chief's hparams.json a temporary sibling for a while, and have the other worker look
    at the run folder during that while: the moment at which a worker that does not wait for the
    chief to prepare the run folder takes the chief's half-written file for someone else's."""
    from components import runfolder

    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    write, check = runfolder.atomic_write_json, runfolder.check_run_folder_is_ours

    def slow_write(path, obj):
        if Path(path).name == "hparams.json":
            sibling = Path(path).with_name(".hparams.json.writing.tmp")
            sibling.parent.mkdir(parents=True, exist_ok=True)
            sibling.write_text("{}")
            time.sleep(2.0)
            sibling.unlink()
        write(path, obj)

    def late_check(paths):
        time.sleep(0.5)
        check(paths)

    if index == 0:
        runfolder.atomic_write_json = slow_write
    else:
        runfolder.check_run_folder_is_ours = late_check


def main(data_dir: str, run_dir: str, weights_out: str) -> None:
    widen_the_run_folder_race()
    config = TrainConfig(model=ModelConfig(latent_dim=8, g_filters=4, d_filters=4), batch_size=8)
    options = TrainOptions(images=48, precision="float32", checkpoint_every=3, sample_every=6, log_every=2)
    result = train(config, data_dir, run_dir, options, verbose=False)
    gan = result.gan
    weights = {
        f"{net}/{index}": np.asarray(weight.numpy())
        for net in ("generator", "discriminator", "ema_generator")
        for index, weight in enumerate(getattr(gan, net).weights)
    }
    np.savez(weights_out, steps=result.steps, images_seen=result.images_seen, **weights)


if __name__ == "__main__":
    main(*sys.argv[1:4])
