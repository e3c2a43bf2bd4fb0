"""The ingest job's driver: plan the chunks, run the Beam pipeline, publish the output atomically.

`ingest(source, output, options)` lists the source, cuts it into chunks (components.example_gen),
runs the Beam pipeline that writes one shard per chunk into a staging folder beside `output`,
then names the final shards and publishes them with `rejects.jsonl` and `manifest.json` (counts,
shards, options, fingerprint of inputs and options, tool versions): a reader never sees half an
output (components.data_folder). Re-running with the same inputs and options does nothing ("up
to date"). Everything goes through Beam's file systems (components.beamfs), so `--input` and
`--output` may be local folders or object-store URIs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import apache_beam as beam

from components import beamfs, guard, locks
from components.artifacts import fingerprint, tool_versions
from components.data_folder import check_replaceable, delete_folder, new_staging, publish, read_output_manifest, remove_leftovers
from components.errors import PipelineError
from components.example_gen import PROGRESS, SUMMARIES, IngestOptions, beam_options, build_pipeline, plan_chunks
from components.reaper import workers_die_with_this_process
from components.shards import shard_name
from components.sources import FolderSource, ImageSource, Scan

# Bump when the bytes ingest writes for the same inputs and options change: it invalidates
# every existing output's fingerprint, so re-running rebuilds.
INGEST_VERSION = 1
DUPLICATE = "duplicate"  # the reason given in rejects.jsonl for an image that was already written


def ingest_fingerprint(source_identity: dict, options: IngestOptions) -> str:
    """Same fingerprint = same records: the up-to-date check compares it with the manifest's."""
    return fingerprint({"version": INGEST_VERSION, "source": source_identity, "options": asdict(options)})


# ---------------------------------------------------------------------------------------------
# The whole job


@dataclass
class IngestReport:
    output: str
    manifest: dict
    up_to_date: bool  # nothing was done: the output already matched inputs and options
    seconds: float = 0.0
    removed: list[str] = field(default_factory=list)  # leftovers of killed runs that were cleaned


def ingest(
    source: ImageSource,
    output: str | os.PathLike,
    options: IngestOptions = IngestOptions(),
    beam_args: Sequence[str] = (),
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest `source` into `output` (shards, manifest.json, rejects.jsonl), atomically.

    `output` (and a folder source) may be a local path or a URI of any Beam file system; Beam's
    flags in `beam_args` configure those file systems too. Does nothing if `output` already
    holds this source with these options, unless `overwrite`. `on_progress(done, total)` is
    called from a watcher thread as images are processed.
    """
    output = _normal(output)
    beamfs.configure(beam_args)
    guard.output_folder("`output`", output, inputs=[("`input`", source.root if isinstance(source, FolderSource) else None)])
    # One ingest at a time per output, and none while a training or an evaluation reads it
    # (components.locks); object stores have no such locks.
    with contextlib.nullcontext() if beamfs.is_uri(output) else locks.writing(output, "`output`"):
        return _ingest(source, output, options, beam_args, overwrite, on_progress)


def _ingest(
    source: ImageSource,
    output: str,
    options: IngestOptions,
    beam_args: Sequence[str],
    overwrite: bool,
    on_progress: Callable[[int, int], None] | None,
) -> IngestReport:
    started = time.perf_counter()
    scan = source.scan()
    digest = ingest_fingerprint(scan.identity, options)
    previous = read_output_manifest(output)
    if previous is not None and previous.get("fingerprint") == digest and not overwrite:
        return IngestReport(output, previous, up_to_date=True)
    check_replaceable(output, previous, overwrite)
    removed = remove_leftovers(output)
    staging = new_staging(output)
    try:
        chunks = plan_chunks(scan.names, options)
        total = len(scan.names) + len(scan.unlisted)
        with workers_die_with_this_process(), _watch_progress(beamfs.join(staging, PROGRESS), total, on_progress):
            with beam.Pipeline(options=beam_options(beam_args)) as pipeline:
                build_pipeline(pipeline, source, chunks, options, staging, beam_args)
        _close_dask_client(beam_args)
        summaries = [json.loads(beamfs.read_bytes(beamfs.join(staging, SUMMARIES, f"{chunk.key}.json"))) for chunk in chunks]
        manifest, moves, rejects = _assemble(summaries, scan, options, digest, beam_args)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        publish(staging, output, moves, rejects, manifest, previous)
    except BaseException:
        delete_folder(staging)  # a failed or interrupted ingest leaves the old output as it was
        raise
    return IngestReport(output, manifest, up_to_date=False, seconds=manifest["seconds"], removed=removed)


def _close_dask_client(beam_args: Sequence[str]) -> None:
    """Beam's Dask runner leaves its client connected to the cluster; close it once the job is done."""
    if any("DaskRunner" in flag for flag in beam_args):
        with contextlib.suppress(Exception):
            from distributed import default_client

            default_client().close()


def _normal(output: str | os.PathLike) -> str:
    """A URI without its trailing slash; a local path made absolute (without following links), so that
    `.` or `..` names the folder itself and the staging folder and lock beside it have a place."""
    return str(output).rstrip("/") if beamfs.is_uri(str(output)) else os.path.abspath(output)


def _assemble(
    summaries: list[dict], scan: Scan, options: IngestOptions, digest: str, beam_args: Sequence[str]
) -> tuple[dict, dict, str]:
    """The manifest (counts must add up), the final shard names and rejects.jsonl's text."""
    rejects = sorted([*scan.unlisted, *(r for s in summaries for r in s["rejects"])], key=lambda r: r["source"])
    duplicates = sorted((d for s in summaries for d in s["duplicates"]), key=lambda d: d["source"])
    moves, splits = {}, {}
    for split in ("train", "eval"):
        kept = sorted((s for s in summaries if s["split"] == split and s["count"]), key=lambda s: s["index"])
        shards = [
            {"file": shard_name(split, index, len(kept)), "count": s["count"], "bytes": s["bytes"]}
            for index, s in enumerate(kept)
        ]
        moves.update({s["file"]: shard["file"] for s, shard in zip(kept, shards)})
        splits[split] = {"count": sum(shard["count"] for shard in shards), "shards": shards}
    seen = len(scan.names) + len(scan.unlisted)
    written = sum(split["count"] for split in splits.values())
    if written + len(rejects) + len(duplicates) != seen:  # every input is accounted for, or it is our bug
        raise RuntimeError(
            f"ingest lost track of files: {seen} seen, {written} written, {len(rejects)} rejected, {len(duplicates)} duplicates"
        )
    if written == 0:
        raise PipelineError(_nothing_written_message(seen, rejects))
    lines = rejects + [{"source": d["source"], "reason": DUPLICATE, "duplicate_of": d["duplicate_of"]} for d in duplicates]
    manifest = {
        "format": "animegan-examples",
        "version": INGEST_VERSION,
        "image_size": options.image_size,
        "channels": 3,
        "splits": splits,
        "counts": {"seen": seen, "written": written, "duplicates": len(duplicates), "rejected": len(rejects)},
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "bytes": sum(shard["bytes"] for split in splits.values() for shard in split["shards"]),
        "fingerprint": digest,
        "source": scan.identity,
        "options": asdict(options) | {"min_size": options.effective_min_size},
        "beam_options": redact(beam_args),
        "tool_versions": tool_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return manifest, moves, "".join(_json_line(line) for line in sorted(lines, key=lambda r: r["source"]))


_SECRET = re.compile(r"(secret|password|token|access_key|credential)", re.IGNORECASE)


def redact(beam_args: Sequence[str]) -> list[str]:
    """The Beam flags as recorded in the manifest: values of secrets (keys, tokens) replaced by ***."""
    return [
        f"{flag.split('=', 1)[0]}=***" if "=" in flag and _SECRET.search(flag.split("=", 1)[0]) else flag for flag in beam_args
    ]


def _nothing_written_message(seen: int, rejects: list[dict]) -> str:
    reasons = ", ".join(f"{count} {reason}" for reason, count in Counter(r["reason"] for r in rejects).most_common())
    first = rejects[0] if rejects else None
    example = f" For example {first['source']}: {first['reason']} ({first['detail']})." if first else ""
    return (
        f"no images written: all {seen} input files were rejected ({reasons}).{example} "
        "Check that `input` points at a folder of JPEG, PNG, WebP, BMP or GIF images at least "
        "`min_size` pixels on a side, or use the built-in faces: `python -m pipeline.ingest --synthetic 2000`."
    )


def _json_line(record: dict) -> str:
    """One line of rejects.jsonl: ASCII JSON, so a file name in any encoding survives."""
    return json.dumps(record, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------
# Progress: workers write their count to a small file per chunk; a driver thread sums them.
# This works for any runner whose workers share the output's file system, and costs no shuffle.


@contextlib.contextmanager
def _watch_progress(folder: str, total: int, on_progress: Callable[[int, int], None] | None) -> Iterator[None]:
    if on_progress is None:
        yield
        return
    stop = threading.Event()

    def report() -> None:
        done = 0
        with contextlib.suppress(Exception):  # not there yet, or a count being replaced right now
            for path in beamfs.list_files(folder + "/"):
                with contextlib.suppress(Exception):
                    done += int(beamfs.read_bytes(path))
        on_progress(done, total)

    def poll() -> None:
        while not stop.wait(3.0 if beamfs.is_uri(folder) else 0.5):  # object-store reads cost ~0.2 s each
            report()

    watcher = threading.Thread(target=poll, name="ingest-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
    report()
