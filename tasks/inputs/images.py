"""Facts about cover files that validation checks: where they are, whether they decode, their size;
and `load_cover`, the one decoding every later stage shares (light on imports: engine workers load it).

Probing is the slowest part of validation (every cover is decoded), so it runs in chunks on the
data engine (tasks/platform/engine.py). A bad file never raises: its facts say what is wrong.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.platform.engine import IN_PROCESS, chunk_bounds, map_chunks
from tasks.platform.sections import EngineSettings
from tasks.platform.settings import RuntimeSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFacts:
    """What is wrong with a cover, first failure only: a file outside the root is not also
    reported missing, a missing file not also undecodable (unchecked facts read True)."""

    path: str
    inside_root: bool
    exists: bool
    decodes: bool
    width: int
    height: int
    error: str


def resolve_inside_root(root: Path, ref: str) -> tuple[Path, bool]:
    """Resolve an image reference against its root; symlinks and '..' are followed before the check."""
    candidate = Path(ref) if os.path.isabs(ref) else Path(root) / ref
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(candidate)
    inside = os.path.commonpath([real_root, real_path]) == real_root
    return Path(real_path), inside


def cover_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a person sees the cover, whatever the file holds.

    Camera rotation (EXIF) is applied; transparency is laid over white, the page a cover is
    printed on, not over black; 16-bit and float greyscale are scaled to 8 bits, because
    Pillow's own conversion clips every value above 255 to white.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def probe_image(root: str, ref: str, max_pixels: int) -> ImageFacts:
    """Only the header is read before the size check, so a decompression bomb is never decoded."""
    path, inside = resolve_inside_root(Path(root), ref)
    if not inside:
        return ImageFacts(str(path), False, True, True, 0, 0, "outside data root")
    if not path.is_file():
        return ImageFacts(str(path), True, False, True, 0, 0, "no such file")
    try:
        with pixel_limit(max_pixels), Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return ImageFacts(str(path), True, True, True, width, height, f"{width}x{height} exceeds max_image_pixels={max_pixels}")
            cover_rgb(image)
        return ImageFacts(str(path), True, True, True, width, height, "")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return ImageFacts(str(path), True, True, False, 0, 0, f"{type(error).__name__}: {error}"[:200])


@contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's own bomb guard replaced by the caller's size check on the header: Pillow's would
    refuse a huge image before its size is known, and the quarantine could not say what it was.
    Any bomb warning Pillow still raises while decoding becomes an error."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@task(name="probe-covers-chunk", cache_policy=NO_CACHE)
def probe_chunk(roots: list[str], refs: list[str], max_pixels: int) -> list[ImageFacts]:
    return [probe_image(root, ref, max_pixels) for root, ref in zip(roots, refs)]


def probe_images(roots: list[str], refs: list[str], max_pixels: int, engine: EngineSettings = IN_PROCESS,
                 runtime: RuntimeSettings | None = None) -> list[ImageFacts]:
    """Facts for each (root, ref) pair, in order, probed in chunks on the data engine."""
    roots = [os.path.abspath(root) for root in roots]  # a worker's working directory may not be ours
    chunks = [{"roots": roots[start:stop], "refs": refs[start:stop], "max_pixels": max_pixels}
              for start, stop in chunk_bounds(len(refs), engine.chunk_covers)]
    return [facts for chunk in map_chunks(probe_chunk, chunks, engine, "probe covers", runtime) for facts in chunk]


def load_cover(path: Path, size: int) -> np.ndarray:
    """Decode, resize the short side to `size` (bicubic) and centre-crop: CLIP's own preprocessing, as uint8.

    A JPEG at least twice `size` is decoded at a reduced scale (`draft`: the DCT does the first
    halvings for free); the shard writer, evaluation, the index and search queries all share this.
    """
    with Image.open(path) as image:
        image.draft(None, (size, size))
        return square_cover(cover_rgb(image), size)


def square_cover(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image's centre square resized (bicubic) to size x size uint8, in one resampling pass.

    Resampling only the centre box, rather than resizing the whole image and cropping, skips the
    pixels the crop throws away (a third of a book cover): ~30 % faster at 224 px.
    """
    side = min(image.size)
    left, top = (image.width - side) / 2, (image.height - side) / 2
    resized = image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    return np.asarray(resized, dtype=np.uint8)


def facts_table(facts: list[ImageFacts]) -> dict[str, np.ndarray]:
    columns = [asdict(fact) for fact in facts]
    return {key: np.array([row[key] for row in columns]) for key in ImageFacts.__dataclass_fields__}
