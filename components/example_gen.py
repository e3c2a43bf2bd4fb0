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
5. The driver (components.ingester) renumbers the shards (dropping empty ones), writes
   `manifest.json` and `rejects.jsonl`, and renames the staging folder into place.

Runs on the DirectRunner (multi-processing, one worker per core) by default; any Beam options
are passed through, so the same job runs on Flink, Spark or Dataflow given an output folder on a
file system all workers share.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from components import beamfs, images
from components.ingest_options import IngestOptions
from components.shards import frame_records, framed_size, serialize_example, shard_name
from components.sources import ImageSource

TARGET_SHARD_BYTES = 32 * 1024 * 1024
EXAMPLE_OVERHEAD_BYTES = 200  # protobuf keys, source, sha256 and TFRecord framing, per image
DEDUPE_BUCKETS = 16
SUMMARIES = "_chunks"  # staging sub-folders, removed before the output is published
PROGRESS = "_progress"
_PROGRESS_EVERY = 200  # images between progress updates of a worker


# ---------------------------------------------------------------------------------------------
# Planning: splits and chunks, decided from names alone


def split_of(name: str, eval_fraction: float) -> str:
    """`eval` for a stable `eval_fraction` of names, `train` for the rest (hash of the name)."""
    point = int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2**64
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
    sizes: list[int] = field(default_factory=list)  # bytes of each written record, framing included
    rejects: list[dict] = field(default_factory=list)


def write_chunk(
    spec: ChunkSpec, source: ImageSource, options: IngestOptions, staging: str, fs_flags: Sequence[str]
) -> ChunkResult:
    """Decode, validate and resize the images of one chunk and write them as its shard.

    A chunk whose every image was rejected writes no file (object stores hold no empty objects).
    """
    beamfs.configure(fs_flags)  # in this worker: some runners (Dask) do not pass options on
    result, records = ChunkResult(spec), []
    every = _PROGRESS_EVERY if not beamfs.is_uri(staging) else len(spec.names)  # remote writes cost ~0.2 s
    for done, name in enumerate(spec.names, 1):
        try:
            data = source.read(name, images.max_file_bytes(options.max_pixels))
            prepared = images.prepare_image(
                data, options.image_size, options.resize, options.effective_min_size, options.max_pixels
            )
        except images.Rejected as rejected:
            result.rejects.append({"source": name, "reason": rejected.reason, "detail": rejected.detail})
        else:
            records.append(serialize_example(prepared.pixels, name, prepared.sha256))
            result.hashes.append((prepared.pixel_hash, name))
            result.sizes.append(len(records[-1]))
        if done % every == 0 or done == len(spec.names):
            beamfs.write_bytes(beamfs.join(staging, PROGRESS, spec.key), str(done).encode())
    if records:
        framed = frame_records(records)
        result.sizes = [framed_size(size) for size in result.sizes]
        beamfs.write_bytes(beamfs.join(staging, spec.file), framed)
    return result


def hash_buckets(result: ChunkResult) -> Iterator[tuple[int, list[tuple[str, bytes, str, int]]]]:
    """Spread a chunk's (hash, name, chunk, position) entries over buckets keyed by hash.

    Names travel as bytes: a file name that is not UTF-8 (kept in Python as surrogate escapes)
    cannot pass Beam's coders as text.
    """
    buckets = defaultdict(list)
    for position, (pixel_hash, name) in enumerate(result.hashes):
        buckets[int(pixel_hash[:8], 16) % DEDUPE_BUCKETS].append((pixel_hash, _wire(name), result.spec.key, position))
    yield from buckets.items()


def _wire(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _unwire(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def find_duplicates(bucket: int, parts: Iterable[list[tuple[str, bytes, str, int]]]) -> Iterator[tuple[str, dict]]:
    """For every set of equal pixel hashes keep the smallest name; yield (chunk, drop) for the rest."""
    by_hash = defaultdict(list)
    for part in parts:
        for pixel_hash, name, chunk, position in part:
            by_hash[pixel_hash].append((name, chunk, position))
    for copies in by_hash.values():
        kept, *others = sorted(copies)
        for name, chunk, position in others:
            yield chunk, {"position": position, "source": name, "duplicate_of": kept[0]}


def finalize_chunk(result: ChunkResult, drops: list[dict], staging: str, fs_flags: Sequence[str]) -> dict:
    """Remove dropped duplicates from a chunk's shard; write and return the chunk's summary.

    The kept records are copied as the bytes they are (framing and CRCs included), from the
    offsets `write_chunk` recorded: nothing is parsed, checked or serialised a second time.
    """
    beamfs.configure(fs_flags)
    path = beamfs.join(staging, result.spec.file)
    kept_bytes = sum(result.sizes)
    if drops:
        dropped = {drop["position"] for drop in drops}
        offsets = [0, *itertools.accumulate(result.sizes)]
        data = beamfs.read_bytes(path)
        kept = b"".join(data[offsets[i] : offsets[i + 1]] for i in range(len(result.sizes)) if i not in dropped)
        beamfs.write_bytes(path, kept) if kept else beamfs.delete([path])
        kept_bytes = len(kept)
    drops = [{**drop, "source": _unwire(drop["source"]), "duplicate_of": _unwire(drop["duplicate_of"])} for drop in drops]
    summary = {
        "split": result.spec.split,
        "index": result.spec.index,
        "file": result.spec.file,
        "count": len(result.hashes) - len(drops),
        "bytes": kept_bytes,
        "rejects": result.rejects,
        "duplicates": [{"source": d["source"], "duplicate_of": d["duplicate_of"]} for d in drops],
    }
    beamfs.write_bytes(beamfs.join(staging, SUMMARIES, f"{result.spec.key}.json"), json.dumps(summary).encode())
    return summary


def finalize_joined(keyed: tuple[str, dict], staging: str, fs_flags: Sequence[str]) -> str:
    """`finalize_chunk` for one chunk's CoGroupByKey output: (key, {result: [it], drops: [...]}).

    Returns the chunk's key, not its summary: the summary goes to its file, and the runner
    encodes what a transform returns, which text holding a non-UTF-8 file name cannot pass.
    """
    key, joined = keyed
    (result,) = joined["result"]
    finalize_chunk(result, list(joined["drops"]), staging, fs_flags)
    return key


def _chunk_key(result: ChunkResult) -> tuple[str, ChunkResult]:
    return result.spec.key, result


def build_pipeline(
    pipeline: beam.Pipeline,
    source: ImageSource,
    chunks: list[ChunkSpec],
    options: IngestOptions,
    staging: str,
    fs_flags: Sequence[str] = (),
) -> None:
    """Add the ingest transforms to `pipeline`; running it fills `staging` (see module docstring).

    The graph has a single leaf (`DropDuplicates`): Beam's Dask runner computes only the last
    leaf of a pipeline, so every branch must end there.
    """
    flags = tuple(fs_flags)
    results = (
        pipeline | "Chunks" >> beam.Create(chunks) | "DecodeResizeWrite" >> beam.Map(write_chunk, source, options, staging, flags)
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
        | "DropDuplicates" >> beam.Map(finalize_joined, staging, flags)
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
