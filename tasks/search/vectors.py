"""The nearest rows of a cover index's vectors: an exact scan, or FAISS inverted lists above a size.

An exact scan of n rows costs n x d multiply-adds a query: 3.2 ms p50 at 100,000 rows of d = 256 on
two cores and 36 ms at a million (`make bench-search`), growing with n.
Above `vector_index.approximate_above` rows each modality gets an IVF index (`IVF<lists>,<codes>`,
inner product): a query scans the `probes` lists whose centroids are closest, and its `rerank` best
candidates are re-scored exactly from the float32 vectors, so the scores a user sees are the exact
ones and only recall is approximate. The FAISS file is opened memory-mapped (its codes stay on
disk, in the page cache), and it is trained on a sample and filled a chunk at a time from the
vectors' file, so neither building nor serving holds every vector in memory.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from tqdm import tqdm

from tasks.platform.sections import VectorIndexSettings

log = logging.getLogger(__name__)

VECTORS = ("images", "captions")  # a title query searches the images, a cover query the captions


class NearestRows(Protocol):
    matrix: np.ndarray  # every row's vector (memory-mapped): the exact scores of any rows

    def top(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k best rows by inner product, best first."""
        ...


class ExactVectors:
    """Every row scored: the reference the approximate index is measured against."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix

    def top(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.matrix @ np.asarray(vector, np.float32)
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, np.int64)
        best = best[np.argsort(-scores[best], kind="stable")]
        return best, scores[best]


class ApproximateVectors:
    """Candidates from the FAISS lists, ranked by their exact scores (read from the memory-mapped rows)."""

    def __init__(self, matrix: np.ndarray, index: faiss.Index, probes: int, rerank: int) -> None:
        self.matrix, self.index, self.rerank = matrix, index, rerank
        self.parameters = faiss.SearchParametersIVF(nprobe=probes)
        faiss.extract_index_ivf(index).parallel_mode = 1  # one query's lists over the cores (FAISS's default splits queries)

    def top(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        query = np.asarray(vector, np.float32).reshape(1, -1)
        _, found = self.index.search(query, max(k, self.rerank), params=self.parameters)
        candidates = np.sort(found[0][found[0] >= 0])  # sorted: the memory-mapped rows are read in file order
        scores = np.asarray(self.matrix[candidates]) @ query[0]
        best = np.argsort(-scores, kind="stable")[:k]
        return candidates[best], scores[best]


def approximate_file(name: str) -> str:
    return f"{name}.faiss"


def index_plan(rows: int, settings: VectorIndexSettings) -> dict[str, object] | None:
    """The approximate index `rows` vectors get (what index.json records), or None: exact search only."""
    if rows <= settings.approximate_above:
        return None
    lists = settings.lists or 2 ** round(math.log2(math.sqrt(rows)))
    lists = max(1, min(lists, rows // 39))  # FAISS wants ~39 training rows a list
    return {"factory": f"IVF{lists},{settings.codes}", "lists": lists,
            "probes": min(lists, settings.probes or round(4 * math.sqrt(lists))), "rerank": settings.rerank}


def build_approximate(vectors: Path, path: Path, plan: dict[str, object], settings: VectorIndexSettings,
                      rows: int | None = None, seed: int = 0) -> None:
    """Train the lists and codes on a sample of the first `rows` rows of a .npy file, then add them a chunk at a time.

    The file is read, not memory-mapped: mapped pages would stay resident in this process until the
    whole file had passed through it.
    """
    rows = VectorFile(vectors).rows if rows is None else rows
    source = VectorFile(vectors, rows)
    index = faiss.index_factory(source.dim, str(plan["factory"]), faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(seed).choice(rows, min(settings.train_rows, rows), replace=False))
    log.info("training %s on %d of %d rows", plan["factory"], len(sample), rows)
    index.train(source.take(sample, settings.chunk_rows))
    _add_rows(index, source, 0, settings.chunk_rows)
    faiss.write_index(index, str(path))


def extend_approximate(previous: Path, vectors: Path, path: Path, chunk_rows: int) -> bool:
    """Add the rows past the previous index's to a copy of it (no retraining); False when it cannot be extended.

    An `add-covers` batch is small next to an index big enough to be approximate: its lists,
    trained on the rows before it, place the new rows as well as a retraining would.
    """
    source = VectorFile(vectors)
    if not previous.is_file():
        return False
    index = faiss.read_index(str(previous))
    if index.ntotal > source.rows or index.d != source.dim:
        return False
    _add_rows(index, source, int(index.ntotal), chunk_rows)
    faiss.write_index(index, str(path))
    return True


class VectorWriter:
    """A float32 .npy matrix written a block of rows at a time, so no writer holds all the rows.

    The header is written first with no rows and rewritten with the count on close: numpy pads
    the header so that the first dimension can grow to 21 digits without changing its length.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim, self.rows = Path(path), dim, 0
        self._file = self.path.open("wb")
        self._write_header()

    def _write_header(self) -> None:
        self._file.seek(0)
        np.lib.format.write_array_header_1_0(self._file, {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.dim)})

    def write(self, block: np.ndarray) -> None:
        if len(block) == 0:
            return
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"{self.path}: rows of {self.dim} values expected, got a block of shape {block.shape}")
        self._file.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        if self._file.closed:
            return
        self._write_header()
        self._file.close()


class VectorFile:
    """A float32 .npy matrix read in row ranges with plain reads."""

    def __init__(self, path: Path, rows: int | None = None) -> None:
        header = np.load(path, mmap_mode="r")
        if header.dtype != np.float32 or header.ndim != 2:
            raise ValueError(f"{path}: expected a 2-d float32 matrix, found {header.dtype} {header.shape}")
        self.path, self.offset, self.dim = Path(path), header.offset, header.shape[1]
        self.rows = header.shape[0] if rows is None else min(rows, header.shape[0])
        del header

    def read(self, start: int, stop: int) -> np.ndarray:
        stop = min(stop, self.rows)
        count = max(0, stop - start) * self.dim
        return np.fromfile(self.path, np.float32, count, offset=self.offset + 4 * start * self.dim).reshape(-1, self.dim)

    def take(self, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
        """The given sorted rows, gathered one chunk of the file at a time."""
        parts = [self.read(start, start + chunk_rows)[rows[(rows >= start) & (rows < start + chunk_rows)] - start]
                 for start in range(0, self.rows, chunk_rows)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


def write_approximate(folder: Path, rows: int, settings: VectorIndexSettings, previous: Path | None = None,
                      ) -> dict[str, object] | None:
    """The FAISS files of an index folder whose vectors are written, or None below the size that needs them.

    An index that already had them (`previous`, with its index.json) is extended with the same plan.
    """
    plan = index_plan(rows, settings)
    if plan is None:
        return None
    previous_plan = _recorded_plan(previous) if previous is not None else None
    if previous_plan and all(extend_approximate(previous / approximate_file(name), folder / f"{name}.npy",
                                                folder / approximate_file(name), settings.chunk_rows) for name in VECTORS):
        return previous_plan
    for name in VECTORS:
        build_approximate(folder / f"{name}.npy", folder / approximate_file(name), plan, settings)
    return plan


def _recorded_plan(folder: Path) -> dict[str, object] | None:
    index_json = Path(folder) / "index.json"
    return json.loads(index_json.read_text(encoding="utf-8")).get("approximate") if index_json.is_file() else None


def _add_rows(index: faiss.Index, source: VectorFile, start: int, chunk_rows: int) -> None:
    starts = range(start, source.rows, chunk_rows)
    for first in tqdm(starts, desc="fill index", unit="chunk", disable=len(starts) <= 1):
        index.add(source.read(first, first + chunk_rows))


def open_vectors(folder: Path, name: str, plan: dict[str, object] | None) -> NearestRows:
    """The `name` vectors of an index folder (images or captions), searched as index.json says."""
    matrix = np.load(Path(folder) / f"{name}.npy", mmap_mode="r")
    if not plan:
        return ExactVectors(matrix)
    matrix._mmap.madvise(mmap.MADV_RANDOM)  # re-scoring reads ~100 scattered rows: no read-ahead around each
    index = faiss.read_index(str(Path(folder) / approximate_file(name)), faiss.IO_FLAG_MMAP_IFC)
    return ApproximateVectors(matrix, index, int(plan["probes"]), int(plan["rerank"]))
