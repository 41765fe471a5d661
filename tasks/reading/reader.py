"""The cover reader: PP-OCRv4 text detection and recognition, run by onnxruntime, as packaged by
`rapidocr-onnxruntime` (Apache-2.0). Its wheel ships the three ONNX models (detector, recogniser,
angle classifier, ~15 MB), so reading works offline and downloads nothing at run time.

A cover is decoded by the project's own image code (EXIF rotation, CMYK, palette, transparency:
tasks/inputs/images.py), then handed to the reader as BGR pixels. Every line it reads comes back
with its confidence and its box (four corner points in the cover's own pixels). onnxruntime, like
torch, spins its threads: one reader per process, `reading.threads` threads each (one per core is
right on a cluster of single-threaded workers).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tasks.inputs.images import cover_rgb, pixel_limit
from tasks.platform.errors import ModelLoadError
from tasks.platform.sections import ReadingSettings

log = logging.getLogger(__name__)

READER_PACKAGE = "rapidocr-onnxruntime"
READER_LICENCE = "Apache-2.0 (the package and its PP-OCR models, from PaddleOCR)"
MAX_READ_PIXELS = 40_000_000


@dataclass(frozen=True)
class ReadLine:
    text: str
    confidence: float
    box: list[float]  # x0, y0, x1, y1, x2, y2, x3, y3: the line's corners, clockwise from the top left


@dataclass(frozen=True)
class CoverReading:
    lines: list[ReadLine]
    error: str | None = None
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """The lines in the reader's order (top to bottom), one space between them."""
        return " ".join(line.text for line in self.lines)


def reader_version() -> str:
    try:
        return metadata.version(READER_PACKAGE)
    except metadata.PackageNotFoundError:
        return "not installed"


class CoverReader:
    """One loaded reader: load once, read many covers."""

    def __init__(self, options: ReadingSettings) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise ModelLoadError(
                f"the cover reader needs the {READER_PACKAGE} package ({error}); `make setup` installs it"
            ) from error

        class TallestLines(RapidOCR):
            """The reader, recognising only the `max_lines` tallest lines it detects: titles and authors are printed
            large, and recognition (one model run per line, wide lines cost most) takes ~85 % of a cover's time."""

            def auto_text_det(self, img: np.ndarray) -> tuple[list[np.ndarray] | None, float]:
                boxes, seconds = super().auto_text_det(img)
                return (boxes if boxes is None else tallest(boxes, options.max_lines)), seconds

        self.options = options
        self.engine = TallestLines(
            det_limit_side_len=options.detector_side,
            det_limit_type=options.detector_side_rule,
            use_cls=options.angle_classifier,
            text_score=options.min_confidence,
            rec_batch_num=options.recognizer_batch,
            intra_op_num_threads=options.threads,
            inter_op_num_threads=1,
            print_verbose=False,
        )

    def read_pixels(self, rgb: np.ndarray) -> list[ReadLine]:
        """The lines of one RGB uint8 cover."""
        found, _ = self.engine(np.ascontiguousarray(rgb[..., ::-1]))  # the reader's own pipeline is OpenCV's: BGR
        return [_line(entry) for entry in found or []]

    def read(self, source: Path | bytes) -> CoverReading:
        """One cover file (or its bytes), read; an image that cannot be decoded or read gives its reason instead."""
        started = time.perf_counter()
        try:
            lines = self.read_pixels(decoded_rgb(source))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return CoverReading([], f"{type(error).__name__}: {error}"[:300], time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001  the reader's own failure on one cover is recorded, never fatal
            return CoverReading([], f"reader failed: {type(error).__name__}: {error}"[:300], time.perf_counter() - started)
        return CoverReading(lines, None, time.perf_counter() - started)


def tallest(boxes: list[np.ndarray], max_lines: int) -> list[np.ndarray]:
    """The `max_lines` tallest boxes (height: the left edge's length), kept in the detector's top-to-bottom order."""
    if max_lines <= 0 or len(boxes) <= max_lines:
        return boxes
    heights = np.array([np.linalg.norm(np.asarray(box[3]) - np.asarray(box[0])) for box in boxes])
    keep = np.sort(np.argsort(-heights, kind="stable")[:max_lines])
    return [boxes[i] for i in keep]


def decoded_rgb(source: Path | bytes) -> np.ndarray:
    with pixel_limit(MAX_READ_PIXELS), Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return np.asarray(cover_rgb(image))


def _line(entry: list[Any]) -> ReadLine:
    box, text, confidence = entry
    corners = [round(float(value), 1) for point in box for value in point]
    return ReadLine(str(text), round(float(confidence), 4), corners)


@lru_cache(maxsize=2)
def shared_reader(options: ReadingSettings) -> CoverReader:
    """A process's reader for these options (an engine worker reads every chunk it gets with one)."""
    return CoverReader(options)
