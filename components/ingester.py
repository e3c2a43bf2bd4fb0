"""The ingest job's driver: plan the chunks, run the Beam pipeline, publish the output atomically.

`ingest(source, output, options)` lists the source, cuts it into chunks (components.example_gen),
runs the Beam pipeline that writes one shard per chunk into a staging folder beside `output`,
then names the final shards, writes `rejects.jsonl` and `manifest.json` (counts, shards, options,
fingerprint of inputs and options, tool versions) and renames the staging folder into place. A
reader sees the old output or the new one, never half of one. Re-running with the same inputs
and options does nothing ("up to date").
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import apache_beam as beam

from components.artifacts import (
    MANIFEST,
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    fingerprint,
    read_json,
    tool_versions,
)
from components.errors import PipelineError
from components.example_gen import (
    PROGRESS,
    SUMMARIES,
    ChunkSpec,
    IngestOptions,
    beam_options,
    build_pipeline,
    plan_chunks,
)
from components.records import shard_name
from components.sources import FolderSource, ImageSource

# Bump when the bytes ingest writes for the same inputs and options change: it invalidates
# every existing output's fingerprint, so re-running rebuilds.
INGEST_VERSION = 1
REJECTS = "rejects.jsonl"
DUPLICATE = "duplicate"  # the reason given in rejects.jsonl for an image that was already written


def ingest_fingerprint(source_identity: dict, options: IngestOptions) -> str:
    """Same fingerprint = same records: the up-to-date check compares it with the manifest's."""
    return fingerprint({"version": INGEST_VERSION, "source": source_identity, "options": asdict(options)})


def existing_fingerprint(output: str | os.PathLike) -> str | None:
    """The fingerprint of a finished ingest output, or None if there is none."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return read_json(Path(output) / MANIFEST)["fingerprint"]
    return None


# ---------------------------------------------------------------------------------------------
# The whole job


@dataclass
class IngestReport:
    output: Path
    manifest: dict
    up_to_date: bool  # nothing was done: the output already matched inputs and options
    seconds: float = 0.0


def ingest(
    source: ImageSource,
    output: str | os.PathLike,
    options: IngestOptions = IngestOptions(),
    beam_args: Sequence[str] = (),
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Ingest `source` into `output` (shards, manifest.json, rejects.jsonl), atomically.

    Does nothing if `output` already holds this source with these options, unless `overwrite`.
    `on_progress(done, total)` is called from a watcher thread as images are processed.
    """
    options.validate()
    output = Path(output)
    if isinstance(source, FolderSource) and output.resolve().is_relative_to(Path(source.root).resolve()):
        raise PipelineError(f"--output {output} is inside --input {source.root}: its shards would become inputs. Write elsewhere.")
    started = time.perf_counter()
    names, identity = source.scan()
    digest = ingest_fingerprint(identity, options)
    if output.exists():
        previous = existing_fingerprint(output)
        if previous == digest and not overwrite:
            return IngestReport(output, read_json(output / MANIFEST), up_to_date=True)
        if previous is None and not overwrite:
            raise PipelineError(
                f"{output} exists and is not an ingest output (no valid {MANIFEST}); "
                "choose another --output or pass --overwrite to replace it."
            )
    chunks = plan_chunks(names, options)
    with atomic_directory(output, overwrite=True) as staging:
        with _watch_progress(staging / PROGRESS, len(names), on_progress):
            with beam.Pipeline(options=beam_options(beam_args)) as pipeline:
                build_pipeline(pipeline, source, chunks, options, str(staging))
        summaries = _read_summaries(staging, chunks)
        manifest = _assemble(staging, summaries, len(names), identity, options, digest, beam_args)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(staging / MANIFEST, manifest)
    return IngestReport(output, manifest, up_to_date=False, seconds=manifest["seconds"])


def _read_summaries(staging: Path, chunks: list[ChunkSpec]) -> list[dict]:
    summaries = [read_json(staging / SUMMARIES / f"{chunk.key}.json") for chunk in chunks]
    for folder in (SUMMARIES, PROGRESS):
        for path in (staging / folder).glob("*"):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (staging / folder).rmdir()
    return summaries


def _assemble(
    staging: Path,
    summaries: list[dict],
    seen: int,
    source_identity: dict,
    options: IngestOptions,
    digest: str,
    beam_args: Sequence[str],
) -> dict:
    """Name the final shards, write rejects.jsonl, and build the manifest (counts must add up)."""
    rejects = sorted((r for s in summaries for r in s["rejects"]), key=lambda r: r["source"])
    duplicates = sorted((d for s in summaries for d in s["duplicates"]), key=lambda d: d["source"])
    splits = {split: _publish_shards(staging, [s for s in summaries if s["split"] == split]) for split in ("train", "eval")}
    written = sum(split["count"] for split in splits.values())
    if written + len(rejects) + len(duplicates) != seen:  # every input is accounted for, or it is our bug
        raise RuntimeError(f"ingest lost track of files: {seen} seen, {written} written, {len(rejects)} rejected, {len(duplicates)} duplicates")
    if written == 0:
        raise PipelineError(_nothing_written_message(seen, rejects))
    lines = rejects + [{"source": d["source"], "reason": DUPLICATE, "duplicate_of": d["duplicate_of"]} for d in duplicates]
    atomic_write_text(staging / REJECTS, "".join(_json_line(line) for line in sorted(lines, key=lambda r: r["source"])))
    return {
        "format": "animegan-examples",
        "version": INGEST_VERSION,
        "image_size": options.image_size,
        "channels": 3,
        "splits": splits,
        "counts": {"seen": seen, "written": written, "duplicates": len(duplicates), "rejected": len(rejects)},
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejects).items())),
        "bytes": sum(shard["bytes"] for split in splits.values() for shard in split["shards"]),
        "fingerprint": digest,
        "source": source_identity,
        "options": asdict(options) | {"min_size": options.effective_min_size},
        "beam_options": list(beam_args),
        "tool_versions": tool_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _publish_shards(staging: Path, summaries: list[dict]) -> dict:
    """Drop empty shards and renumber the rest `split-i-of-n`; the split's manifest entry."""
    kept = []
    for summary in sorted(summaries, key=lambda s: s["index"]):
        if summary["count"] == 0:
            (staging / summary["file"]).unlink()
        else:
            kept.append(summary)
    shards = []
    for index, summary in enumerate(kept):
        name = shard_name(summary["split"], index, len(kept))
        if name != summary["file"]:
            os.replace(staging / summary["file"], staging / name)
        shards.append({"file": name, "count": summary["count"], "bytes": summary["bytes"]})
    return {"count": sum(shard["count"] for shard in shards), "shards": shards}


def _nothing_written_message(seen: int, rejects: list[dict]) -> str:
    reasons = ", ".join(f"{count} {reason}" for reason, count in Counter(r["reason"] for r in rejects).most_common())
    first = rejects[0] if rejects else None
    example = f" For example {first['source']}: {first['reason']} ({first['detail']})." if first else ""
    return (
        f"no images written: all {seen} input files were rejected ({reasons}).{example} "
        "Check that --input points at a folder of JPEG, PNG, WebP, BMP or GIF images at least "
        "--min-size pixels on a side, or use the built-in faces: `python -m pipeline.ingest --synthetic 2000`."
    )


def _json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------
# Progress: workers write their count to a small file per chunk; a driver thread sums them.
# This works for any runner whose workers share the output's file system, and costs no shuffle.


@contextlib.contextmanager
def _watch_progress(folder: Path, total: int, on_progress: Callable[[int, int], None] | None) -> Iterator[None]:
    if on_progress is None:
        yield
        return
    stop = threading.Event()

    def report() -> None:
        done = 0
        for path in folder.glob("[!.]*"):
            with contextlib.suppress(OSError, ValueError):  # a file being replaced right now
                done += int(path.read_text())
        on_progress(done, total)

    def poll() -> None:
        while not stop.wait(0.5):
            report()

    watcher = threading.Thread(target=poll, name="ingest-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
    report()
