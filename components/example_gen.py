"""The ingest job: an image source to sharded TFRecords, as an Apache Beam pipeline.

How the work is cut (and why):

1. The driver lists the inputs (names, sizes, mtimes only), gives each a train/eval split from a
   hash of its name, and cuts each split into chunks of about `TARGET_SHARD_BYTES` of output.
   One chunk = one shard file, so shard names are known before any pixel is decoded.
2. `write_chunk` (the heavy, parallel stage) reads, decodes, validates and resizes every image of
   its chunk and writes the shard itself. What it passes on through the runner is small: per
   image a pixel hash and a name, per reject a reason. Forcing `num_shards` on `WriteToTFRecord`
   instead would shuffle every record's pixels through the runner (0.3x a plain loop here).
3. Deduplication needs a global view of the pixel hashes only: they are grouped by hash bucket,
   each set of equal hashes keeps the image with the smallest name, and the others' positions go
   back to their chunk.
4. `finalize_chunk` rewrites the shards that lost duplicates (no decoding: a copy of the kept
   records) and writes a small JSON summary per chunk.
5. The driver renumbers the shards (dropping empty ones), writes `manifest.json` and
   `rejects.jsonl`, and renames the staging folder into place.

Runs on the DirectRunner (multi-processing, one worker per core) by default; any Beam options
are passed through, so the same job runs on Flink, Spark or Dataflow given an output folder on a
file system all workers share.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import stat
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from components import images, synthetic
from components.artifacts import MANIFEST, atomic_directory, atomic_write_json, atomic_write_text, fingerprint, read_json, tool_versions
from components.errors import PipelineError
from components.records import read_records, serialize_example, shard_name, write_shard

# Bump when the bytes ingest writes for the same inputs and options change: it invalidates
# every existing output's fingerprint, so re-running rebuilds.
INGEST_VERSION = 1
TARGET_SHARD_BYTES = 32 * 1024 * 1024
EXAMPLE_OVERHEAD_BYTES = 200  # protobuf keys, source, sha256 and TFRecord framing, per image
DEDUPE_BUCKETS = 16
REJECTS = "rejects.jsonl"
DUPLICATE = "duplicate"  # the reason given in rejects.jsonl for an image that was already written
_SUMMARIES = "_chunks"  # staging sub-folders, removed before the output is published
_PROGRESS = "_progress"
_PROGRESS_EVERY = 200  # images between progress updates of a worker


# ---------------------------------------------------------------------------------------------
# Options and sources


@dataclass(frozen=True)
class IngestOptions:
    """Everything that shapes the records; all of it goes into the output's fingerprint."""

    image_size: int = 64
    resize: str = "center-crop"
    min_size: int | None = None  # None: half of image_size
    eval_fraction: float = 0.05
    dedupe: bool = True
    shards: int | None = None  # per split; None: sized to about TARGET_SHARD_BYTES
    max_pixels: int = images.MAX_PIXELS

    @property
    def effective_min_size(self) -> int:
        return self.min_size if self.min_size is not None else max(1, self.image_size // 2)

    def validate(self) -> None:
        """Raise `PipelineError` for options that make no sense, before any work starts."""
        if not 4 <= self.image_size <= 4096:
            raise PipelineError(f"--image-size must be between 4 and 4096, got {self.image_size}.")
        if self.resize not in images.RESIZE_MODES:
            raise PipelineError(f"--resize must be one of {', '.join(images.RESIZE_MODES)}, got {self.resize!r}.")
        if self.min_size is not None and self.min_size < 1:
            raise PipelineError(f"--min-size must be at least 1, got {self.min_size}.")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise PipelineError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}.")
        if self.shards is not None and self.shards < 1:
            raise PipelineError(f"--shards must be at least 1, got {self.shards}.")


@dataclass(frozen=True)
class FolderSource:
    """Every file under a folder (recursively), named by its path relative to the folder."""

    root: str

    def scan(self) -> tuple[list[str], dict]:
        """The input names, and an identity for the fingerprint that changes when any input does.

        Cheap but change-sensitive: names, sizes and modification times (no file is read).
        """
        files = self._files()
        identity = {"kind": "folder", "root": str(Path(self.root).resolve()), "files": fingerprint(files)}
        return [name for name, _ in files], identity

    def read(self, name: str) -> bytes:
        return images.read_file(Path(self.root) / name)

    def _files(self) -> list[tuple[str, list[int]]]:
        root = Path(self.root)
        if not root.is_dir():
            raise PipelineError(_no_images_message(f"{root} does not exist or is not a folder."))
        files = []
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .ipynb_checkpoints...
            for name in names:
                if name.startswith("."):  # .DS_Store and friends are not inputs
                    continue
                path = Path(folder, name)
                try:
                    info = path.stat()
                except OSError:  # a dangling link: listed, so that it is rejected as unreadable
                    files.append((path.relative_to(root).as_posix(), [-1, 0]))
                    continue
                if stat.S_ISREG(info.st_mode):  # skip pipes and sockets, which would block a read
                    files.append((path.relative_to(root).as_posix(), [info.st_size, info.st_mtime_ns]))
        if not files:
            raise PipelineError(_no_images_message(f"{root} holds no files."))
        return sorted(files)


@dataclass(frozen=True)
class SyntheticSource:
    """`count` procedural faces (components.synthetic), drawn inside the workers as PNG bytes."""

    count: int
    seed: int = 0
    size: int = 64

    def scan(self) -> tuple[list[str], dict]:
        names = [synthetic.face_filename(index) for index in range(self.count)]
        return names, {"kind": "synthetic", "count": self.count, "seed": self.seed, "size": self.size, "version": synthetic.VERSION}

    def read(self, name: str) -> bytes:
        index = int(name.removeprefix("face-").removesuffix(".png"))
        buffer = io.BytesIO()
        synthetic.synthetic_face(self.seed, index, self.size).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


ImageSource = FolderSource | SyntheticSource


def _no_images_message(problem: str) -> str:
    return (
        f"no input images: {problem} Put the anime faces data set in it (download it from "
        "https://www.kaggle.com/soumikrakshit/anime-faces and unpack its images into data/, any "
        "sub-folders are fine), or point --input at your own image folder, or use the built-in "
        "procedural faces: `python -m pipeline.ingest --synthetic 2000`."
    )


def ingest_fingerprint(source_identity: dict, options: IngestOptions) -> str:
    """Same fingerprint = same records: the up-to-date check compares it with the manifest's."""
    return fingerprint({"version": INGEST_VERSION, "source": source_identity, "options": asdict(options)})


def existing_fingerprint(output: str | os.PathLike) -> str | None:
    """The fingerprint of a finished ingest output, or None if there is none."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return read_json(Path(output) / MANIFEST)["fingerprint"]
    return None


# ---------------------------------------------------------------------------------------------
# Planning: splits and chunks, decided from names alone


def split_of(name: str, eval_fraction: float) -> str:
    """`eval` for a stable `eval_fraction` of names, `train` for the rest (hash of the name)."""
    point = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") / 2**64
    return "eval" if point < eval_fraction else "train"


@dataclass(frozen=True)
class ChunkSpec:
    """One unit of parallel work: the images of one shard."""

    split: str
    index: int
    total: int
    names: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.split}-{self.index:05d}"

    @property
    def file(self) -> str:
        return shard_name(self.split, self.index, self.total)


def plan_chunks(names: Sequence[str], options: IngestOptions) -> list[ChunkSpec]:
    """Cut each split into near-equal chunks, largest first (the runner deals them round-robin)."""
    by_split: dict[str, list[str]] = {"train": [], "eval": []}
    for name in names:
        by_split[split_of(name, options.eval_fraction)].append(name)
    per_shard = max(1, TARGET_SHARD_BYTES // (options.image_size**2 * 3 + EXAMPLE_OVERHEAD_BYTES))
    chunks = []
    for split, members in by_split.items():
        if not members:
            continue
        total = min(options.shards, len(members)) if options.shards else math.ceil(len(members) / per_shard)
        bounds = [round(i * len(members) / total) for i in range(total + 1)]
        chunks += [ChunkSpec(split, i, total, tuple(members[bounds[i] : bounds[i + 1]])) for i in range(total)]
    return sorted(chunks, key=lambda chunk: -len(chunk.names))


# ---------------------------------------------------------------------------------------------
# The Beam transforms


@dataclass
class ChunkResult:
    """What a chunk passes through the runner: hashes and names, never pixels."""

    spec: ChunkSpec
    hashes: list[tuple[str, str]] = field(default_factory=list)  # (pixel hash, name) per written record
    rejects: list[dict] = field(default_factory=list)


def write_chunk(spec: ChunkSpec, source: ImageSource, options: IngestOptions, staging: str) -> ChunkResult:
    """Decode, validate and resize the images of one chunk and write them as its shard."""
    result, records = ChunkResult(spec), []
    progress = Path(staging, _PROGRESS, spec.key)
    for done, name in enumerate(spec.names, 1):
        try:
            prepared = images.prepare_image(
                source.read(name), options.image_size, options.resize, options.effective_min_size, options.max_pixels
            )
        except images.Rejected as rejected:
            result.rejects.append({"source": name, "reason": rejected.reason, "detail": rejected.detail})
        else:
            records.append(serialize_example(prepared.pixels, name, prepared.sha256))
            result.hashes.append((prepared.pixel_hash, name))
        if done % _PROGRESS_EVERY == 0 or done == len(spec.names):
            _report_progress(progress, done)
    write_shard(Path(staging, spec.file), records)
    return result


def hash_buckets(result: ChunkResult) -> Iterator[tuple[int, list[tuple[str, str, str, int]]]]:
    """Spread a chunk's (hash, name, chunk, position) entries over buckets keyed by hash."""
    buckets = defaultdict(list)
    for position, (pixel_hash, name) in enumerate(result.hashes):
        buckets[int(pixel_hash[:8], 16) % DEDUPE_BUCKETS].append((pixel_hash, name, result.spec.key, position))
    yield from buckets.items()


def find_duplicates(bucket: int, parts: Iterable[list[tuple[str, str, str, int]]]) -> Iterator[tuple[str, dict]]:
    """For every set of equal pixel hashes keep the smallest name; yield (chunk, drop) for the rest."""
    by_hash = defaultdict(list)
    for part in parts:
        for pixel_hash, name, chunk, position in part:
            by_hash[pixel_hash].append((name, chunk, position))
    for copies in by_hash.values():
        kept, *others = sorted(copies)
        for name, chunk, position in others:
            yield chunk, {"position": position, "source": name, "duplicate_of": kept[0]}


def finalize_chunk(result: ChunkResult, drops: list[dict], staging: str) -> dict:
    """Remove dropped duplicates from a chunk's shard; write and return the chunk's summary."""
    path = Path(staging, result.spec.file)
    if drops:
        dropped = {drop["position"] for drop in drops}
        kept = [record for position, record in enumerate(read_records(path)) if position not in dropped]
        temporary = path.with_name(path.name + ".dedupe")
        write_shard(temporary, kept)
        os.replace(temporary, path)
    summary = {
        "split": result.spec.split,
        "index": result.spec.index,
        "file": result.spec.file,
        "count": len(result.hashes) - len(drops),
        "bytes": path.stat().st_size,
        "rejects": result.rejects,
        "duplicates": [{"source": d["source"], "duplicate_of": d["duplicate_of"]} for d in drops],
    }
    atomic_write_json(Path(staging, _SUMMARIES, f"{result.spec.key}.json"), summary)
    return summary


def finalize_joined(keyed: tuple[str, dict], staging: str) -> dict:
    """`finalize_chunk` for one chunk's CoGroupByKey output: (key, {result: [it], drops: [...]})."""
    _, joined = keyed
    (result,) = joined["result"]
    return finalize_chunk(result, list(joined["drops"]), staging)


def _chunk_key(result: ChunkResult) -> tuple[str, ChunkResult]:
    return result.spec.key, result


def build_pipeline(
    pipeline: beam.Pipeline, source: ImageSource, chunks: list[ChunkSpec], options: IngestOptions, staging: str
) -> None:
    """Add the ingest transforms to `pipeline`; running it fills `staging` (see module docstring)."""
    results = (
        pipeline
        | "Chunks" >> beam.Create(chunks)
        | "DecodeResizeWrite" >> beam.Map(write_chunk, source, options, staging)
    )
    if options.dedupe:
        drops = (
            results
            | "HashBuckets" >> beam.FlatMap(hash_buckets)
            | "GroupByHashBucket" >> beam.GroupByKey()
            | "FindDuplicates" >> beam.FlatMapTuple(find_duplicates)
        )
    else:
        drops = pipeline | "NoDuplicates" >> beam.Create([])
    _ = (
        {"result": results | "KeyByChunk" >> beam.Map(_chunk_key), "drops": drops}
        | "JoinDrops" >> beam.CoGroupByKey()
        | "DropDuplicates" >> beam.Map(finalize_joined, staging)
    )


def beam_options(extra: Sequence[str] = ()) -> PipelineOptions:
    """DirectRunner over every core, unless `extra` (the user's Beam flags, untouched) says otherwise.

    The runner is pinned because Beam's newer default local runner may download a binary; our
    defaults come first, so a later `--runner` or `--direct_num_workers` from the user wins.
    """
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    defaults = [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        "--default_sdk_harness_log_level=WARNING",  # workers log every bundle at INFO
    ]
    return PipelineOptions([*defaults, *extra])


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
        with _watch_progress(staging / _PROGRESS, len(names), on_progress):
            with beam.Pipeline(options=beam_options(beam_args)) as pipeline:
                build_pipeline(pipeline, source, chunks, options, str(staging))
        summaries = _read_summaries(staging, chunks)
        manifest = _assemble(staging, summaries, len(names), identity, options, digest, beam_args)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(staging / MANIFEST, manifest)
    return IngestReport(output, manifest, up_to_date=False, seconds=manifest["seconds"])


def _read_summaries(staging: Path, chunks: list[ChunkSpec]) -> list[dict]:
    summaries = [read_json(staging / _SUMMARIES / f"{chunk.key}.json") for chunk in chunks]
    for folder in (_SUMMARIES, _PROGRESS):
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


def _report_progress(path: Path, done: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(str(done))
    os.replace(temporary, path)  # advisory: no fsync, a reader sees the old or the new count


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
