"""A run's checkpoints: which are intact, the newest to resume from, a stable view for readers.

`checkpoints/ckpt-N` (the last few) and `checkpoints/best/` (lowest `swd_avg`) hold G, D, the EMA
generator, both Adam states, the RNG states, the step and images-seen counters and the best score
so far. A crash may leave the newest checkpoint torn, or TensorFlow's `checkpoint` index file
pointing at a missing one: `restore_newest_intact` then falls back to the newest intact
checkpoint and says which one it skipped and why. `pinned_checkpoints` gives readers (export,
evaluation) a view of the files that a training rotating its checkpoints cannot delete half-way.
`CheckpointState` is the trainer's side: saving, rotating and the best checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from components.artifacts import RunPaths, atomic_write_text, temporary_prefix
from components.errors import PipelineError

CHECKPOINT_NAME = "ckpt"
BEST = "best"


def checkpoint_prefixes(directory: Path, *, complete: bool = True) -> list[Path]:
    """The checkpoints in `directory`, newest (highest number) first: those whose index file
    exists, or with `complete=False` also those of which only data files are left.

    TensorFlow's `checkpoint` state file is not trusted: a crash between writing a checkpoint and
    updating it, or a torn state file, must not hide (or invent) a checkpoint.
    """
    numbered = set()
    for entry in directory.iterdir() if directory.is_dir() else ():
        match = re.fullmatch(rf"(({CHECKPOINT_NAME}|{BEST})-(\d+))(\.index|\.data-\d+-of-\d+)", entry.name)
        if match and (match.group(4) == ".index" or not complete):
            numbered.add((int(match.group(3)), directory / match.group(1)))
    return [prefix for _, prefix in sorted(numbered, reverse=True)]


def restore_newest_intact(
    checkpoint, directory: Path, say=print, *, partial: bool = False, shown_as: Path | None = None
) -> Path | None:
    """Restore `checkpoint` (a `tf.train.Checkpoint`) from the newest intact checkpoint in `directory`.

    Returns its prefix, or None when the folder holds no checkpoint at all. A damaged newer
    checkpoint is skipped with a note saying why; if every checkpoint is damaged, `PipelineError`.
    `partial`: `checkpoint` holds only some of the saved objects (e.g. the EMA generator alone).
    `shown_as`: the folder to name in messages when `directory` is a view of it (`pinned_checkpoints`).
    """
    skipped = [
        (directory / name, "TensorFlow's checkpoint file names it, but its files are gone") for name in _missing_named(directory)
    ]
    for prefix in checkpoint_prefixes(directory, complete=False):
        if not Path(f"{prefix}.index").is_file():
            skipped.append((prefix, "its .index file is missing: the save was cut short"))
            continue
        try:
            status = checkpoint.restore(str(prefix))
            if partial:
                status.expect_partial()
            status.assert_existing_objects_matched()
        except Exception as err:  # noqa: BLE001 - TensorFlow raises many kinds on a damaged file
            skipped.append((prefix, _first_line(err)))
            _quiet_unrestored_values()
            continue
        for bad, why in skipped:
            if _number(bad) > _number(prefix):
                say(f"note: skipped checkpoint {bad.name}, which is damaged ({why}); resuming from {prefix.name} instead")
        return prefix
    if skipped:
        raise PipelineError(
            f"every checkpoint in {shown_as or directory} is damaged (newest {skipped[0][0].name}: {skipped[0][1]}); "
            "pass `overwrite` to start over."
        )
    return None


@contextlib.contextmanager
def pinned_checkpoints(directory: Path, beside: Path) -> Iterator[Path]:
    """A view of the checkpoints in `directory` that no training changes while it is read: a
    temporary folder in `beside` (on the same disk) with hard links to every checkpoint's files,
    or copies where the file system has no hard links.

    A training deletes its older checkpoints as it saves new ones; a reader that listed them and
    then opened one could find it gone half-way. A hard link keeps a file's contents whatever
    happens to its name, and checkpoint files never change once written, so the view holds whole
    checkpoints. One that disappears while the view is made is left out. Where nothing can be
    written beside the checkpoints (a read-only copy of a run), no training rotates them either:
    the view is the folder itself. The view is deleted on leaving; one left by a killed process is
    removed by the next training in the run folder (`remove_stale_temporaries`).
    """
    try:
        view = Path(tempfile.mkdtemp(prefix=temporary_prefix(directory.name), suffix=".tmp", dir=beside))
    except OSError:
        yield directory
        return
    try:
        for prefix in checkpoint_prefixes(directory, complete=False):  # torn ones too: the reader says why it skips them
            files = list(directory.glob(f"{prefix.name}.*"))
            try:
                for source in files:
                    _link_or_copy(source, view / source.name)
            except FileNotFoundError:  # rotated away by a training just now: not damaged, just gone
                for source in files:
                    (view / source.name).unlink(missing_ok=True)
        yield view
    finally:
        shutil.rmtree(view, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(source, target)


def checkpoint_fingerprint(prefix: str | Path) -> str:
    """Identifies a checkpoint's contents: its .index file lists every tensor with a checksum."""
    return hashlib.sha256(Path(f"{prefix}.index").read_bytes()).hexdigest()[:16]


class _UnrestoredValues(logging.Filter):
    """Drops TensorFlow's warnings about checkpoint values that were not restored."""

    MESSAGES = ("being deleted with unrestored values", "Value in checkpoint could not be found in the restored object")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(message in record.getMessage() for message in self.MESSAGES)


def _quiet_unrestored_values() -> None:
    """After a failed restore, TensorFlow keeps its half-done restoration attached to the objects and,
    when they are deleted (often at exit), logs a warning per value it did not restore: dozens of
    lines about a checkpoint whose one note already said why it was skipped. Restores that succeed
    match every object they fill, so these warnings only ever concern skipped checkpoints."""
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(existing, _UnrestoredValues) for existing in logger.filters):
        logger.addFilter(_UnrestoredValues())


def _missing_named(directory: Path) -> list[str]:
    """Checkpoints TensorFlow's state file lists whose files are all gone."""
    state = directory / "checkpoint"
    if not state.is_file():
        return []
    named = re.findall(r'^(?:all_)?model_checkpoint_paths?: "([^"]+)"', state.read_text(errors="replace"), flags=re.MULTILINE)
    present = {prefix.name for prefix in checkpoint_prefixes(directory, complete=False)}
    names = {Path(name).name for name in named}
    return sorted(
        (name for name in names if name not in present and re.fullmatch(r"\w+-\d+", name)),
        key=lambda n: -int(n.rsplit("-", 1)[1]),
    )


def _first_line(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    return text.strip().splitlines()[0][:300]


def remove_checkpoints_after(directory: Path, prefix: Path | None) -> None:
    """Delete this run's checkpoints newer than `prefix` (damaged or from after the resume point)
    and the temporary folders of interrupted saves, and point TensorFlow's state file at `prefix`,
    so the next save continues a consistent sequence."""

    if not directory.is_dir():
        return
    number = _number(prefix) if prefix is not None else -1
    for entry in list(directory.iterdir()):
        match = re.fullmatch(rf"({CHECKPOINT_NAME}|{BEST})-(\d+)(\.index|\.data-\d+-of-\d+|_temp)", entry.name)
        if match and (int(match.group(2)) > number or match.group(3) == "_temp"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    kept = [prefix.name for prefix in reversed(checkpoint_prefixes(directory))]
    if kept:  # TensorFlow's CheckpointState text format, oldest first
        lines = [f'model_checkpoint_path: "{kept[-1]}"', *(f'all_model_checkpoint_paths: "{name}"' for name in kept)]
        atomic_write_text(directory / "checkpoint", "\n".join(lines) + "\n")
    else:
        (directory / "checkpoint").unlink(missing_ok=True)


def _number(prefix: Path) -> int:
    return int(prefix.name.rsplit("-", 1)[1])


class CheckpointState:
    """The checkpointed state of a run and its two checkpoint managers (periodic and best)."""

    def __init__(self, gan, paths: RunPaths, keep: int, write_dir: Path, chief: bool):
        import tensorflow as tf

        from components.precision import unwrap

        # The optimisers' slots already exist (DCGAN.compile builds them), so a restore fills them.
        self.gan, self.paths, self.keep, self.write_dir, self.chief = gan, paths, keep, write_dir, chief
        self.best_swd = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_swd")
        self.checkpoint = tf.train.Checkpoint(
            generator=gan.generator,
            discriminator=gan.discriminator,
            ema_generator=gan.ema_generator,
            g_optimizer=unwrap(gan.g_optimizer),
            d_optimizer=unwrap(gan.d_optimizer),
            latent_rng=gan.latent_seeds.state,
            **gan.checkpointed_state(),
            step=gan.step,
            images_seen=gan.images_seen,
            best_swd=self.best_swd,
        )
        self.periodic = self.best = None
        self.saved_step = -1

    @property
    def step_now(self) -> int:
        return int(self.gan.step.numpy())

    @property
    def images_seen_now(self) -> int:
        return int(self.gan.images_seen.numpy())

    @property
    def best_swd_now(self) -> float | None:
        value = float(self.best_swd.numpy())
        return value if math.isfinite(value) else None

    def restore(self, say=print) -> int | None:
        """Load the newest intact checkpoint, if any, and set up saving after it; its step, or
        None for a fresh start. Refuses (PipelineError) where earlier progress cannot be found."""
        import tensorflow as tf

        prefix = restore_newest_intact(self.checkpoint, self.paths.checkpoints, say)
        if self.chief:
            remove_checkpoints_after(self.paths.checkpoints, prefix)
            best = checkpoint_prefixes(self.paths.checkpoints / BEST)  # kept even if newer: still the best weights seen
            remove_checkpoints_after(self.paths.checkpoints / BEST, best[0] if best else None)
            self.best = tf.train.CheckpointManager(
                self.checkpoint, str(self.paths.checkpoints / BEST), max_to_keep=1, checkpoint_name=BEST
            )
        self.periodic = tf.train.CheckpointManager(
            self.checkpoint, str(self.write_dir), max_to_keep=self.keep, checkpoint_name=CHECKPOINT_NAME
        )
        if prefix is None:
            return None
        best = self._best_score()
        if best is not None:
            # A killed run may have kept a better "best" after its last periodic checkpoint.
            self.best_swd.assign(min(float(self.best_swd.numpy()), best))
        self.saved_step = self.step_now
        return self.saved_step

    def _best_score(self) -> float | None:
        import tensorflow as tf

        for prefix in checkpoint_prefixes(self.paths.checkpoints / BEST):
            try:
                return float(tf.train.load_variable(str(prefix), "best_swd/.ATTRIBUTES/VARIABLE_VALUE"))
            except (ValueError, tf.errors.OpError):
                continue
        return None

    def save(self) -> None:
        self.periodic.save(checkpoint_number=self.step_now)
        self.saved_step = self.step_now

    def save_if_best(self, swd: float) -> bool:
        if swd >= float(self.best_swd.numpy()):
            return False
        self.best_swd.assign(swd)
        if self.best is not None:
            self.best.save(checkpoint_number=self.step_now)
        return True
