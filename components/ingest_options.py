"""What shapes an ingest's records: `IngestOptions`, declared once (components.settings).

`components.ingester.ingest` takes the object, `pipeline.ingest` (and `pipeline.run`'s
--eval-fraction) build their flags from its fields, and every field goes into the output's
fingerprint and its manifest's "options", which `pipeline.ingest --config manifest.json` reads back.
Kept apart from the Beam job (components.example_gen) so that a command line is parsed and checked
without importing Beam.
"""

from __future__ import annotations

from dataclasses import dataclass

from components import images
from components.settings import SettingError, check_settings, setting

_LIMITS = images.OPTION_LIMITS


@dataclass(frozen=True)
class IngestOptions:
    """Everything that shapes the records; all of it goes into the output's fingerprint."""

    image_size: int = setting(
        64, "side in pixels of the square training images", kind=int, low=_LIMITS["image_size"][0], high=_LIMITS["image_size"][1]
    )
    resize: str = setting(
        "center-crop",
        "how non-square images become square: crop the centre, pad with white, or stretch",
        kind=str,
        choices=images.RESIZE_MODES,
    )
    min_size: int | None = setting(
        None,
        "reject images whose shorter side is below this (default: half of --image-size)",
        kind=int,
        low=_LIMITS["min_size"][0],
        high=_LIMITS["min_size"][1],
    )
    # In [0, 1): checked in __post_init__, as a flag's range cannot leave out its upper end.
    eval_fraction: float = setting(0.1, "share of images held out in the eval split", kind=float)
    dedupe: bool = setting(
        True, "write one copy of each set of exact duplicate images (the flag --no-dedupe keeps them all)", kind=bool
    )
    shards: int | None = setting(
        None,
        "shards per split (default: as many as make shards of about 32 MB)",
        kind=int,
        low=_LIMITS["shards"][0],
        high=_LIMITS["shards"][1],
    )
    max_pixels: int = setting(
        images.MAX_PIXELS,
        f"reject images of more pixels (decompression bombs; the default is 8192x8192), and files of more than "
        f"{images.BYTES_PER_PIXEL} bytes a pixel plus {images.METADATA_BYTES // 2**20} MB (read no further); at most "
        f"{images.PILLOW_MAX_PIXELS:,}, Pillow's own limit",
        kind=int,
        low=_LIMITS["max_pixels"][0],
        high=_LIMITS["max_pixels"][1],
        metavar="N",
    )

    def __post_init__(self) -> None:
        check_settings(self)
        if not 0.0 <= self.eval_fraction < 1.0:
            raise SettingError("eval_fraction", f"must be in [0, 1), got {self.eval_fraction}.")

    @property
    def effective_min_size(self) -> int:
        return self.min_size if self.min_size is not None else max(1, self.image_size // 2)
