"""Facts about cover files that validation checks: where they are, whether they decode, their size.

Probing happens once per distinct file, in a process pool, because decoding ~17k covers is
the slowest part of validation. A bad file never raises: its facts say what is wrong.
"""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

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


def probe_image(root: str, ref: str, max_pixels: int) -> ImageFacts:
    path, inside = resolve_inside_root(Path(root), ref)
    if not inside:
        return ImageFacts(str(path), False, True, True, 0, 0, "outside data root")
    if not path.is_file():
        return ImageFacts(str(path), True, False, True, 0, 0, "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    return ImageFacts(str(path), True, True, False, width, height, f"{width}x{height} exceeds max_image_pixels")
                image.load()
        return ImageFacts(str(path), True, True, True, width, height, "")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return ImageFacts(str(path), True, True, False, 0, 0, f"{type(error).__name__}: {error}"[:200])


def _probe_star(arguments: tuple[str, str, int]) -> ImageFacts:
    return probe_image(*arguments)


def probe_images(roots: list[str], refs: list[str], max_pixels: int, workers: int) -> list[ImageFacts]:
    """Facts for each (root, ref) pair, in order, with a progress bar."""
    jobs = [(root, ref, max_pixels) for root, ref in zip(roots, refs)]
    if workers <= 1 or len(jobs) < 200:
        return [_probe_star(job) for job in tqdm(jobs, desc="probe covers", unit="img", disable=len(jobs) < 200)]
    chunk = max(16, len(jobs) // (workers * 16))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_probe_star, jobs, chunksize=chunk), total=len(jobs), desc="probe covers", unit="img"))


def facts_table(facts: list[ImageFacts]) -> dict[str, np.ndarray]:
    columns = [asdict(fact) for fact in facts]
    return {key: np.array([row[key] for row in columns]) for key in ImageFacts.__dataclass_fields__}
