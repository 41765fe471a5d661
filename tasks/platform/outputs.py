"""Writing outputs so that a reader (DVC, the next stage, a person) never sees half of one.

A metrics or report JSON is written to a temporary name and renamed; a folder output is built in
a staging folder beside its target (same filesystem, so the rename is atomic) and swapped in
whole, or removed if building it failed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_json(path: Path, payload: object) -> Path:
    """`payload` as indented JSON at `path` (parents created), replacing any earlier file in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `target`, on any failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the output is an ordinary folder
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
