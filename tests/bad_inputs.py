"""The bad-input corpus: every kind of broken listing and cover a scraped data set brings.

Each case writes a small, otherwise healthy data folder with one defect in it and says what
must happen: the defective row is quarantined with a given reason, the row is kept (the input
is odd but usable), or the whole file is refused with one sentence naming it. Files are built
here rather than checked in, so a 30,000 x 30,000 image costs a few hundred bytes.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_LISTING = [
    ("B001", "Rick Steves Paris 2016", "Rick Steves", "Travel"),
    ("B002", "The Joy of Cooking", "Irma Rombauer", "Cookbooks, Food & Wine"),
    ("B003", "A People's History of the United States", "Howard Zinn", "History"),
    ("B004", "Pride and Prejudice", "Jane Austen", "Literature & Fiction"),
    ("B005", "The Very Hungry Caterpillar", "Eric Carle", "Children's Books"),
    ("B006", "Cosmos", "Carl Sagan", "Science & Math"),
]
GOOD_COVERS = [("Cosmos", "Carl Sagan", "cosmos.jpg"), ("Dune", "Frank Herbert", "dune.jpg"), ("Emma", "Jane Austen", "emma.jpg")]
COVERS_CSV = "covers/covers.csv"
LISTING_CSV = "listings/listing.csv"


@dataclass(frozen=True)
class Case:
    """`expect` is a quarantine reason, "kept", or "refused" (a file-level error)."""

    name: str
    table: str  # "listing" | "covers"
    build: Callable[[Path], None]
    expect: str
    bad_rows: int = 1
    message: str = ""  # for "refused": words the one-sentence error must contain
    check_kept: Callable[[Path, object], None] | None = field(default=None, compare=False)


def amazon_line(asin: str, title: str, author: str, genre: str) -> str:
    cells = [asin, f"{asin}.jpg", f"http://x/{asin}.jpg", title, author, "0", genre]
    return ",".join('"' + cell.replace('"', '""') + '"' for cell in cells) + "\n"


def amazon_listing(extra: str = "", encoding: str = "utf-8", newline: str = "\n", prefix: bytes = b"") -> Callable[[Path], None]:
    """book32's headerless 7-column layout: the good rows, then `extra` (raw CSV text)."""
    def build(root: Path) -> None:
        text = "".join(amazon_line(*row) for row in GOOD_LISTING) + extra
        write(root / LISTING_CSV, prefix + text.replace("\n", newline).encode(encoding))
        write_covers(root, [])
    return build


def generic_listing(header: str, rows: list[str], delimiter: str = ",") -> Callable[[Path], None]:
    def build(root: Path) -> None:
        body = [delimiter.join(cell.replace(delimiter, " ") for cell in (title, author, genre)) for _, title, author, genre in GOOD_LISTING]
        write(root / LISTING_CSV, ("\n".join([header, *body, *rows]) + "\n").encode("utf-8"))
        write_covers(root, [])
    return build


def raw_listing(data: bytes) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        write(root / LISTING_CSV, data)
        write_covers(root, [])
    return build


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def jpeg_bytes(size: tuple[int, int] = (64, 96), mode: str = "RGB", color: object = (200, 30, 30), fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def write_covers(root: Path, extra: list[tuple[str, str, str]], images: dict[str, bytes] | None = None,
                 header: str = "title,author,image,category") -> None:
    """The generic covers table: three good covers, then the extra (title, author, image) rows."""
    folder = root / "covers"
    for _, _, name in GOOD_COVERS:
        write(folder / "img" / name, jpeg_bytes())
    for name, data in (images or {}).items():
        write(folder / "img" / name, data)
    rows = [header] + [",".join(csv_cell(c) for c in (t, a, f"img/{i}" if i else "", "")) for t, a, i in GOOD_COVERS + extra]
    write(root / COVERS_CSV, ("\n".join(rows) + "\n").encode("utf-8"))
    if not (root / LISTING_CSV).exists():
        write(root / LISTING_CSV, "".join(amazon_line(*row) for row in GOOD_LISTING).encode("utf-8"))


def csv_cell(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def one_cover(name: str, data: bytes | None, ref: str | None = None) -> Callable[[Path], None]:
    """The good covers plus one cover file `name` holding `data` (None: the file is not written)."""
    def build(root: Path) -> None:
        write_covers(root, [("Odd Cover", "Some Author", ref if ref is not None else name)], {name: data} if data is not None else {})
    return build


def png_with_size(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decompression_bomb(side: int = 12_000) -> bytes:
    """A real bomb: a ~150 KB PNG that would decode to side^2 bytes (144 MB at 12,000)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_with_size(side, side, idat)


def sixteen_bit_png() -> bytes:
    gradient = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, "PNG")
    return buffer.getvalue()


def transparent_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


def palette_png_with_transparency() -> bytes:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=0)
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    """A landscape photo whose EXIF says 'rotate 90°': a person sees it portrait."""
    image = Image.new("RGB", (96, 64), (10, 120, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def outside_file(root: Path) -> Path:
    return write(root.parent / "outside" / "secret.jpg", jpeg_bytes())


def escaping_ref(kind: str) -> Callable[[Path], None]:
    def build(root: Path) -> None:
        secret = outside_file(root)
        if kind == "dotdot":
            ref = "../../outside/secret.jpg"
        elif kind == "absolute":
            ref = str(secret)
        else:
            link = root / "covers" / "img" / "link.jpg"
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(secret, link)
            ref = "img/link.jpg"
        write_covers(root, [("Escaping Cover", "Some Author", "")])
        text = (root / COVERS_CSV).read_text(encoding="utf-8").replace('"Escaping Cover","Some Author","",',
                                                                        f'"Escaping Cover","Some Author",{csv_cell(ref)},')
        (root / COVERS_CSV).write_text(text, encoding="utf-8")
    return build


def odd_file_names(root: Path) -> None:
    names = ["with space.jpg", 'quote"d.jpg', "co:lon.jpg", "naïve 書.jpg", "it's.jpg"]
    write_covers(root, [(f"Odd Name {i}", "Some Author", name) for i, name in enumerate(names)],
                 {name: jpeg_bytes() for name in names})


def cmyk_jpeg() -> bytes:
    return jpeg_bytes(mode="CMYK", color=(0, 255, 255, 0))  # pure red in CMYK


def mixed_encoding_listing(root: Path) -> None:
    """Mostly UTF-8, one line of stray latin-1 bytes: as book32's own file."""
    good = "".join(amazon_line(*row) for row in GOOD_LISTING).encode("utf-8")
    write(root / LISTING_CSV, good + amazon_line("B900", "Caf\xe9 Rome", "Someone", "Travel").encode("latin-1"))
    write_covers(root, [])


LONG_TITLE = "A" * 10_000
FORMULA = "=cmd|' /C calc'!A0"

LISTING_CASES = [
    Case("empty title", "listing", amazon_listing(amazon_line("B900", "", "Someone", "Travel")), "title_empty"),
    Case("title of 10,000 characters", "listing", amazon_listing(amazon_line("B900", LONG_TITLE, "Someone", "Travel")), "title_too_long"),
    Case("NaN author", "listing", amazon_listing(amazon_line("B900", "Walking Rome", "NaN", "Travel")), "kept"),
    Case("empty author", "listing", amazon_listing(amazon_line("B900", "Walking Rome", "", "Travel")), "kept"),
    Case("unknown category", "listing", amazon_listing(amazon_line("B900", "Walking Rome", "Someone", "Cooking Stuff")), "genre_unknown"),
    Case("missing category", "listing", amazon_listing('"B900","B900.jpg","u","Walking Rome","Someone","",""\n'), "genre_missing"),
    Case("duplicate ASIN with conflicting categories", "listing",
         amazon_listing(amazon_line("B900", "Walking Rome", "Someone", "Travel") + amazon_line("B900", "Walking Rome", "Someone", "History")),
         "conflicting_genre", bad_rows=2),
    Case("duplicate ASIN, same row twice", "listing", amazon_listing(amazon_line("B001", "Rick Steves Paris 2016", "Rick Steves", "Travel")),
         "duplicate_book_id"),
    Case("same title and author under another ASIN", "listing", amazon_listing(amazon_line("B900", "rick steves, PARIS 2016", "Rick Steves", "Travel")),
         "duplicate_title"),
    Case("missing ASIN", "listing", amazon_listing(amazon_line("", "Walking Rome", "Someone", "Travel")), "book_id_missing"),
    Case("formula-like cell (=cmd|...)", "listing", amazon_listing(amazon_line("B900", FORMULA, "Someone", "Travel")), "formula_like_cell"),
    Case("formula-like author (@SUM(...))", "listing", amazon_listing(amazon_line("B900", "Walking Rome", "@SUM(A1:A9)", "Travel")),
         "formula_like_cell"),
    Case("extra column in a row", "listing", amazon_listing('"B900","B900.jpg","u","Walking Rome","Someone","29","Travel","surplus"\n'),
         "unparseable_row"),
    Case("missing columns in a row", "listing", amazon_listing('"B900","B900.jpg","Walking Rome"\n'), "unparseable_row"),
    Case("unbalanced quote swallowing the next lines", "listing",
         amazon_listing('"B900","B900.jpg","u","Walking ""Rome","Someone","29","Travel\n"B901","x","u","Lost","A","29","Travel"\n'),
         "unparseable_row"),
    Case("NUL byte inside a title", "listing", amazon_listing(amazon_line("B900", "Walking\x00 Rome", "Someone", "Travel")), "kept"),
    Case("UTF-8 with BOM", "listing", amazon_listing(amazon_line("B900", "Étude in Rome", "Zoë", "Travel"), prefix=b"\xef\xbb\xbf"), "kept"),
    Case("latin-1 listing", "listing", amazon_listing(amazon_line("B900", "Café in Rome", "José Núñez", "Travel"), encoding="latin-1"), "kept"),
    Case("invalid UTF-8 bytes on one line", "listing", mixed_encoding_listing, "kept"),
    Case("CRLF line endings", "listing", amazon_listing(amazon_line("B900", "Walking Rome", "Someone", "Travel"), newline="\r\n"), "kept"),
    Case("semicolon-delimited table with a header", "listing",
         generic_listing("title;author;genre", ["Walking Rome;Someone;Travel"], delimiter=";"), "kept"),
    Case("tab-delimited table with a header", "listing",
         generic_listing("title\tauthor\tgenre", ["Walking Rome\tSomeone\tTravel"], delimiter="\t"), "kept"),
    Case("extra columns in the header", "listing",
         lambda root: raw_listing(("title,author,genre,isbn13,notes\n" + "".join(
             f"{t},{a},\"{g}\",978000000000{i},n\n" for i, (_, t, a, g) in enumerate(GOOD_LISTING + [("", "Walking Rome", "Someone", "Travel")])
         )).encode("utf-8"))(root), "kept"),
    Case("empty file", "listing", raw_listing(b""), "refused", message="empty"),
    Case("whitespace-only file", "listing", raw_listing(b" \n\n \r\n"), "refused", message="empty"),
    Case("header-only file", "listing", raw_listing(b"title,author,genre\n"), "refused", message="no data rows"),
    Case("wrong delimiter (book32 layout with semicolons)", "listing",
         raw_listing("".join(amazon_line(*row).replace('","', '";"') for row in GOOD_LISTING).encode("utf-8")), "refused",
         message="delimited"),
    Case("missing columns (no category or genre)", "listing", raw_listing(b"title,author\nCosmos,Carl Sagan\n"), "refused",
         message="unknown listing layout"),
    Case("binary file named .csv", "listing", raw_listing(jpeg_bytes()), "refused", message="unknown listing layout"),
]


def _rgb_of(path: Path) -> np.ndarray:
    from tasks.inputs.images import load_cover

    return load_cover(path, 32).astype(int)


def _expect_white(path: Path, _: object) -> None:
    assert _rgb_of(path).min() >= 250, "transparency must be laid over white"


def _expect_unsaturated(path: Path, _: object) -> None:
    image = _rgb_of(path)
    assert image.min() < 40 and image.max() > 215 and 60 < image.mean() < 200, "a 16-bit gradient must stay a gradient"


def _expect_red(path: Path, _: object) -> None:
    red, green, blue = _rgb_of(path).reshape(-1, 3).mean(axis=0)
    assert red > 180 and green < 70 and blue < 70, (red, green, blue)


def _expect_portrait(path: Path, _: object) -> None:
    with Image.open(path) as image:
        from tasks.inputs.images import cover_rgb

        assert cover_rgb(image).size == (64, 96), "EXIF orientation must be applied"


COVER_CASES = [
    Case("truncated JPEG", "covers", one_cover("cut.jpg", jpeg_bytes((256, 256))[:300]), "image_undecodable"),
    Case("zero-byte image", "covers", one_cover("zero.jpg", b""), "image_undecodable"),
    Case("text file named .jpg", "covers", one_cover("note.jpg", b"<html>404 not found</html>"), "image_undecodable"),
    Case("PNG named .jpg", "covers", one_cover("png.jpg", jpeg_bytes(fmt="PNG")), "kept", check_kept=_expect_red),
    Case("WebP named .jpg", "covers", one_cover("webp.jpg", jpeg_bytes(fmt="WEBP")), "kept", check_kept=_expect_red),
    Case("CMYK JPEG", "covers", one_cover("cmyk.jpg", cmyk_jpeg()), "kept", check_kept=_expect_red),
    Case("greyscale JPEG", "covers", one_cover("grey.jpg", jpeg_bytes(mode="L", color=128)), "kept"),
    Case("16-bit greyscale PNG", "covers", one_cover("deep.png", sixteen_bit_png()), "kept", check_kept=_expect_unsaturated),
    Case("RGBA with transparency", "covers", one_cover("alpha.png", transparent_png()), "kept", check_kept=_expect_white),
    Case("palette PNG with a transparent colour", "covers", one_cover("palette.png", palette_png_with_transparency()), "kept",
         check_kept=_expect_white),
    Case("EXIF-rotated photo", "covers", one_cover("rotated.jpg", rotated_jpeg()), "kept", check_kept=_expect_portrait),
    Case("30,000 x 30,000 image", "covers", one_cover("huge.png", png_with_size(30_000, 30_000, zlib.compress(b"\x00" * 30_001))),
         "image_too_large"),
    Case("decompression bomb", "covers", one_cover("bomb.png", decompression_bomb()), "image_too_large"),
    Case("1 x 1 image", "covers", one_cover("dot.jpg", jpeg_bytes((1, 1))), "image_too_small"),
    Case("missing image file", "covers", one_cover("absent.jpg", None), "image_missing"),
    Case("empty image path", "covers", one_cover("unused.jpg", None, ref=""), "image_path_missing"),
    Case("path with ../ leaving the data root", "covers", escaping_ref("dotdot"), "image_outside_root"),
    Case("absolute path outside the data root", "covers", escaping_ref("absolute"), "image_outside_root"),
    Case("symlink leading outside the data root", "covers", escaping_ref("symlink"), "image_outside_root"),
    Case("file names with spaces, quotes, colons and non-ASCII", "covers", odd_file_names, "kept", bad_rows=5),
    Case("covers table without an image column", "covers",
         lambda root: write_covers(root, [], header="title,author,picture,category"), "refused", message="image"),
]

ALL_CASES = LISTING_CASES + COVER_CASES
