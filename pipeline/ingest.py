"""`python -m pipeline.ingest`: an image folder (or built-in faces) to sharded TFRecords, with Beam."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from components.errors import PipelineError
from components.ingest_options import IngestOptions
from pipeline._cli import (  # sets TensorFlow's log level before it loads (tests/test_code_layout.py)
    add_setting,
    bounded_int,
    data_name,
    file_descriptor_2_to,
    make_parser,
    options_from_args,
    run_main,
    seed,
    split_beam_args,
)
from pipeline._config import parse_command_line

if TYPE_CHECKING:
    from components.ingester import IngestReport

MAX_SYNTHETIC = 1_000_000  # built-in faces: their names are listed in memory, and they draw at ~100/s a core

DESCRIPTION = """\
Read every image under --input (recursively; JPEG, PNG, WebP, BMP, GIF first frame), turn each
into a square RGB image of --image-size pixels, and write them as tf.train.Examples into sharded
TFRecords: OUTPUT/{train,eval}-SSSSS-of-NNNNN.tfrecord, OUTPUT/manifest.json (counts, shards,
options, fingerprint, tool versions) and OUTPUT/rejects.jsonl (every file not written, and why).

EXIF rotation is applied, transparency composited on white, exact duplicates (same decoded
pixels) kept once. Broken, empty, non-image, too small or oversized files (see --max-pixels),
pipes and other non-files are listed in rejects.jsonl; they never stop the job. Links to files
and folders are followed; a folder reached a second time (a link loop) is a reject too. The
train/eval split is a hash of each file's path, so it is stable across runs. The output appears
atomically; re-running with the same inputs and options does nothing, changed inputs or options
rebuild it.

Apache Beam runs the job: the DirectRunner on every core by default. Options after `--` go to
Beam unchanged: another runner (e.g. --runner=apache_beam.runners.dask.dask_runner.DaskRunner
--dask_client_address=tcp://host:8786), and the options of the file systems --input and
--output live on (e.g. --s3_endpoint_url=... for s3:// URIs; secrets are not recorded).
--input and --output may not contain one another; an existing output is replaced only if it is
an ingest output holding nothing else.

examples:
  python -m pipeline.ingest --synthetic 2000            # built-in faces -> tfrecords/synthetic
  python -m pipeline.ingest --input data/ --image-size 64
  python -m pipeline.ingest --input ~/photos --resize pad --output tfrecords/photos -- --direct_num_workers=4
  python -m pipeline.ingest --input s3://bucket/faces --output s3://bucket/records -- --s3_endpoint_url=http://host:9000
"""


def no_default(text: str) -> str:
    """Help text whose default is explained in words: `%(default).0s` stops "(default: None)"."""
    return text + "%(default).0s"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser("python -m pipeline.ingest", DESCRIPTION, "[--input DIR | --synthetic N] [options]", tables=("ingest",))
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        default="data",
        help="folder of images, read recursively: a local path or a URI of a Beam file system (gs://, s3://, hdfs://, ...)",
    )
    source.add_argument(
        "--synthetic",
        type=bounded_int(1, MAX_SYNTHETIC),
        metavar="N",
        help=no_default("ingest N built-in procedural anime faces instead of a folder (no download needed)"),
    )
    parser.add_argument("--seed", type=seed, default=0, help="which --synthetic faces: face i of a seed is always the same")
    parser.add_argument(
        "--output",
        help=no_default(
            "output folder, a local path or a URI (default: tfrecords/<input folder name>, or tfrecords/synthetic with "
            "--synthetic); must not contain --input nor lie inside it"
        ),
    )
    for name in ("image_size", "resize", "min_size", "eval_fraction", "shards", "max_pixels"):
        add_setting(parser, IngestOptions, name)
    # The negation of the setting `dedupe`: writing one copy is the rule, keeping them all the switch.
    parser.add_argument("--no-dedupe", action="store_true", help="keep exact duplicate images instead of writing one copy")
    parser.add_argument("--overwrite", action="store_true", help="rebuild the output even if it is up to date")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; only errors and the summary")
    parser.epilog = "Beam options: everything after `--`, e.g. `-- --direct_num_workers=4` or `-- --runner=FlinkRunner ...`."
    return parser


def recorded_settings(path: Path, document: object) -> dict[str, dict] | None:
    """`--config` of a data folder's manifest.json: its source and options, into its own folder
    (to rebuild it, or to ingest the same way elsewhere with --output)."""
    if not isinstance(document, dict) or not isinstance(document.get("options"), dict):
        return None
    source = document.get("source") if isinstance(document.get("source"), dict) else {}
    options = {key: document["options"].get(key) for key in ("image_size", "resize", "eval_fraction", "shards", "max_pixels")}
    settings = {**options, "min_size": document["options"].get("min_size"), "output": str(path.parent)}
    settings["no_dedupe"] = document["options"].get("dedupe") is False
    if source.get("kind") == "synthetic":
        settings.update(synthetic=source.get("count"), seed=source.get("seed"))
    else:
        settings["input"] = source.get("root")
    return {"ingest": settings}


def ingest_options(args: argparse.Namespace) -> IngestOptions:
    """The ingest's options as its flags give them: --no-dedupe is the setting `dedupe` switched off."""
    return options_from_args(IngestOptions, args, dedupe=not args.no_dedupe)


def main(argv: Sequence[str] | None = None, tables=None) -> int:
    ours, beam_args = split_beam_args(sys.argv[1:] if argv is None else argv)
    args = parse_command_line(build_parser(), ours, tables=tables, records=recorded_settings)
    options = ingest_options(args)  # checked before Beam starts
    with beam_chatter_to_log() as terminal, ProgressBar(terminal, disabled=args.quiet) as progress:
        # Imported here: importing Beam already logs warnings that belong in the log, not on screen.
        from components.ingester import ingest
        from components.sources import FolderSource, SyntheticSource

        if args.synthetic:
            source, described = SyntheticSource(args.synthetic, args.seed, args.image_size), f"{args.synthetic} synthetic faces"
            output = args.output or str(Path("tfrecords", "synthetic"))
        else:
            source, described = FolderSource(args.input), f"{args.input.rstrip('/')}/"
            output = args.output or str(Path("tfrecords", data_name(args.input)))
        report = ingest(source, output, options, beam_args, overwrite=args.overwrite, on_progress=progress.update)
    print(summary(report, described))
    return 0


class ProgressBar:
    """A tqdm bar created on the first update, when the total is known (none if nothing runs)."""

    def __init__(self, stream: TextIO, disabled: bool = False):
        self.stream, self.disabled, self.bar = stream, disabled, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc="ingest", unit="img", file=self.stream, disable=self.disabled, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(report: IngestReport, described: str) -> str:
    """The closing lines: what was written, how fast, and what was left out."""
    manifest, output = report.manifest, report.output
    if report.up_to_date:
        return (
            f"{output} is up to date (same inputs and options, fingerprint {manifest['fingerprint']}); "
            "nothing to do. Pass --overwrite to rebuild it."
        )
    counts, splits = manifest["counts"], manifest["splits"]
    shards = sum(len(split["shards"]) for split in splits.values())
    rate = counts["seen"] / report.seconds if report.seconds else float("nan")
    reasons = ", ".join(f"{n} {reason}" for reason, n in manifest["rejected_by_reason"].items())
    lines = [
        f"ingested {described} into {output} in {report.seconds:.1f} s ({rate:,.0f} images/s)",
        f"  written     {splits['train']['count']:,} train + {splits['eval']['count']:,} eval "
        f"({manifest['bytes'] / 1e6:,.1f} MB in {shards} shard{'' if shards == 1 else 's'} "
        f"of {manifest['image_size']}x{manifest['image_size']})",
        f"  duplicates  {counts['duplicates']:,}" + ("" if manifest["options"]["dedupe"] else " (not removed: --no-dedupe)"),
        f"  rejected    {counts['rejected']:,}" + (f" ({reasons})" if reasons else ""),
    ]
    if counts["rejected"] or counts["duplicates"]:
        lines.append(f"  details     {output.rstrip('/')}/rejects.jsonl")
    if splits["eval"]["count"] == 0:
        lines.append("  warning     the eval split is empty: add images or raise --eval-fraction")
    for leftover in report.removed:
        lines.append(f"  cleaned     {leftover} (left by an ingest that was killed)")
    return "\n".join(lines)


@contextlib.contextmanager
def beam_chatter_to_log() -> Iterator[TextIO]:
    """Send file descriptor 2 to a log file while Beam runs; yield a stream to the real stderr.

    Beam's worker processes inherit stderr and log start-up chatter there that no pipeline option
    silences. The progress bar writes to the terminal through the yielded stream. The log is
    deleted on success and kept (its path printed) when the job fails unexpectedly.
    """
    log_fd, log_path = tempfile.mkstemp(prefix="ingest-beam-", suffix=".log")
    keep_log = False
    try:
        with file_descriptor_2_to(log_fd) as real_stderr, os.fdopen(os.dup(real_stderr), "w", buffering=1) as terminal:
            yield terminal
    except (PipelineError, KeyboardInterrupt):
        raise
    except BaseException:
        keep_log = True
        raise
    finally:
        os.close(log_fd)
        if keep_log:
            print(f"(Beam's log of this run: {log_path})", file=sys.stderr)
        else:
            os.unlink(log_path)


def console_script() -> None:
    """`python -m pipeline.ingest` and the `animegan-ingest` command: `main` with the exit codes and the one
    `error:` line every command shares."""
    run_main(main, tensorflow=False)


if __name__ == "__main__":
    console_script()
