"""Decoding and CSV records of the text files users bring: the layer under the listing and cover readers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tasks.platform.errors import InputFileError

DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str


def decode_bytes(raw: bytes) -> DecodedText:
    """UTF-8 (BOM or not) where the bytes are valid UTF-8, else latin-1, which never fails.

    Decided per line, because real listings mix both: book32's file is mostly UTF-8 text with
    a few lines of stray bytes, and decoding it whole as latin-1 would turn every 'é' into 'Ã©'.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return DecodedText(raw.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    lines, fallbacks = [], 0
    for line in raw.splitlines(keepends=True):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
            fallbacks += 1
    return DecodedText("".join(lines), f"utf-8 with {fallbacks} latin-1 line(s)" if fallbacks < len(lines) else "latin-1")


def read_text(path: Path) -> DecodedText:
    if not path.is_file():
        raise InputFileError(f"{path}: file not found; check data.root and the paths under data in params.yaml")
    raw = path.read_bytes()
    if not raw.strip():
        raise InputFileError(f"{path}: the file is empty; point params.yaml at a listing with rows")
    return _without_nul(decode_bytes(raw))


def _without_nul(decoded: DecodedText) -> DecodedText:
    """NUL bytes make the csv module raise; they are never meaningful in a listing."""
    return DecodedText(decoded.text.replace("\x00", ""), decoded.encoding)


def csv_records(text: str, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """(line the record starts on, cells) for every record, blank lines included as []."""
    csv.field_size_limit(1 << 24)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, next_line = [], 1
    for row in reader:
        records.append((next_line, row))
        next_line = reader.line_num + 1
    return records


def head_of(text: str) -> str:
    head = text[:65536]
    return head[: head.rindex("\n") + 1] if "\n" in head else head


def first_record(text: str, delimiter: str = ",") -> list[str]:
    for _, row in csv_records(head_of(text), delimiter):
        if row:
            return [cell.strip().lstrip("\ufeff").lower() for cell in row]
    return []


def sniff_delimiter(text: str) -> str:
    """The delimiter of a headed table: the one whose header names a title column.

    Spreadsheets export ';' (European locales) or tabs as often as commas; guessing from the
    header alone is safe because the header names the title ('title', or Book Depository's 'name').
    """
    for delimiter in DELIMITERS:
        header = first_record(text, delimiter)
        if "title" in header or "name" in header:
            return delimiter
    return ","


def _byte_lines(handle: BinaryIO, block_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The file's lines as bytes, ending at \\n, \\r\\n or \\r as bytes.splitlines() cuts them, read a block at a time."""
    pending = b""
    while block := handle.read(block_bytes):
        lines = (pending + block).splitlines(keepends=True)
        pending = lines.pop()
        if pending.endswith(b"\n"):  # complete; a trailing \r could still be the first half of \r\n
            lines.append(pending)
            pending = b""
        yield from lines
    if pending:
        yield pending


def decoded_lines(path: Path) -> Iterator[str]:
    """The file's lines decoded as decode_bytes decodes the whole file: UTF-8 (BOM dropped), a line
    that is not valid UTF-8 as latin-1; NUL bytes dropped. Memory holds one block, not the file."""
    with path.open("rb") as handle:
        for number, raw in enumerate(_byte_lines(handle)):
            if number == 0 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("latin-1")
            yield line.replace("\x00", "")


def stream_records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, cells) for every non-blank record, as csv_records numbers them."""
    csv.field_size_limit(1 << 24)
    reader = csv.reader(decoded_lines(path), delimiter=delimiter)
    next_line = 1
    for row in reader:
        if any(cell.strip() for cell in row):
            yield next_line, row
        next_line = reader.line_num + 1


def head_text(path: Path, size: int = 65536) -> str:
    """The file's first lines (up to `size` bytes), decoded, for sniffing its layout; errors as read_text's."""
    if not path.is_file():
        raise InputFileError(f"{path}: file not found; check the path")
    with path.open("rb") as handle:
        raw = handle.read(size)
    if not raw.strip():
        raise InputFileError(f"{path}: the file is empty; point at a listing with rows")
    return head_of(_without_nul(decode_bytes(raw)).text)
