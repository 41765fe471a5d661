"""Covers for the embedded data set, drawn rather than shipped: a genre's palette and motif are its
visual signal; jitter, noise and the printed title and author keep a model from memorising pixels."""

from __future__ import annotations

import colorsys
import io
import math
import unicodedata

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tasks.inputs.taxonomy import BOOKCOVER30_GENRES

_MOTIF_COUNT = 10


def _palette(genre: str) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    """Golden-ratio hues keep 30 genres' colours apart without a hand-made table."""
    i = BOOKCOVER30_GENRES.index(genre)
    hue = (i * 0.6180339887) % 1.0
    sat = (0.55, 0.85, 0.35)[i % 3]
    val = (0.85, 0.5, 0.7)[(i // 3) % 3]

    def rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
        return int(r * 255), int(g * 255), int(b * 255)

    return rgb(hue, sat, val), rgb(hue + 0.5, 0.8, 1.15 - val), rgb(hue + 0.25, 0.6, 0.95)


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return r, g, b


def _motif_stripes(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(12, 20))
    for k, y in enumerate(range(int(rng.integers(0, step)), h, step)):
        d.rectangle([0, y, w, y + step // 2 - 1], fill=cols[k % 2])


def _motif_diagonal(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(14, 22))
    width = int(rng.integers(3, 7))
    for x in range(-h + int(rng.integers(0, step)), w, step):
        d.line([x, h, x + h, 0], fill=cols[0], width=width)


def _motif_circles(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    for k in range(int(rng.integers(4, 8))):
        r = int(rng.integers(w // 10, w // 4))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.ellipse([x - r, y - r, x + r, y + r], fill=cols[k % 2])


def _motif_triangles(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    for k in range(int(rng.integers(3, 6))):
        s = int(rng.integers(w // 5, w // 2))
        x, y = int(rng.integers(0, w)), int(rng.integers(s, h + s // 2))
        d.polygon([(x - s // 2, y), (x + s // 2, y), (x, y - s)], fill=cols[k % 2])


def _motif_grid(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(10, 16))
    ox, oy = int(rng.integers(0, step)), int(rng.integers(0, step))
    for x in range(ox, w, step):
        d.line([x, 0, x, h], fill=cols[0], width=2)
    for y in range(oy, h, step):
        d.line([0, y, w, y], fill=cols[1], width=2)


def _motif_waves(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    amp, period = float(rng.uniform(3, 7)), float(rng.uniform(18, 30))
    phase = float(rng.uniform(0, 2 * math.pi))
    for k, y0 in enumerate(range(int(rng.integers(4, 12)), h, 14)):
        pts = [(x, y0 + amp * math.sin(2 * math.pi * x / period + phase)) for x in range(0, w + 4, 4)]
        d.line(pts, fill=cols[k % 2], width=3)


def _motif_stars(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    for k in range(int(rng.integers(4, 8))):
        r = float(rng.uniform(w / 12, w / 6))
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        pts = [(cx + (r if j % 2 == 0 else r / 2.5) * math.sin(j * math.pi / 5),
                cy - (r if j % 2 == 0 else r / 2.5) * math.cos(j * math.pi / 5)) for j in range(10)]
        d.polygon(pts, fill=cols[k % 2])


def _motif_dots(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    step = int(rng.integers(9, 14))
    r = int(rng.integers(2, 4))
    for y in range(int(rng.integers(0, step)), h, step):
        for x in range(int(rng.integers(0, step)), w, step):
            d.ellipse([x - r, y - r, x + r, y + r], fill=cols[0])


def _motif_rings(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))
    for k, r in enumerate(range(int(rng.integers(6, 12)), max(w, h), 10)):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=cols[k % 2], width=3)


def _motif_diamonds(d: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int, cols: list) -> None:
    s = int(rng.integers(10, 16))
    for k, y in enumerate(range(int(rng.integers(0, s)), h + s, 2 * s)):
        for x in range(int(rng.integers(0, s)) + (s if k % 2 else 0), w + s, 2 * s):
            d.polygon([(x, y - s), (x + s, y), (x, y + s), (x - s, y)], fill=cols[k % 2])


_UNFOLDABLE = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss"})
_MOTIFS = (
    _motif_stripes, _motif_diagonal, _motif_circles, _motif_triangles, _motif_grid,
    _motif_waves, _motif_stars, _motif_dots, _motif_rings, _motif_diamonds,
)


def _drawable(text: str) -> str:
    """PIL's built-in font has no accented glyphs; fold them rather than draw boxes."""
    folded = unicodedata.normalize("NFKD", text.translate(_UNFOLDABLE))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def _wrap(text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy wrap on measured width: the default font is proportional."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


TITLE_PX, AUTHOR_PX = 13, 11  # type sizes a cover reader reads at the embedded covers' 96 x 144 px


def _draw_text(d: ImageDraw.ImageDraw, rng: np.random.Generator, title: str, author: str, size: tuple[int, int],
               band: tuple[int, int, int], ink: tuple[int, int, int]) -> None:
    """Title and author on plain bands, as real covers print them, in a scalable font large enough for the cover
    reader (read_covers) to read: PIL's bundled FreeType font, so no system font is needed."""
    w, h = size
    title_font, author_font = ImageFont.load_default(size=TITLE_PX), ImageFont.load_default(size=AUTHOR_PX)
    lines = _wrap(_drawable(title), title_font, w - 8)[:4]
    step = TITLE_PX + 3
    top = int(rng.integers(4, max(5, h // 3)))
    d.rectangle([0, top - 3, w, top + step * len(lines) + 2], fill=band)
    for k, line in enumerate(lines):
        d.text((4, top + step * k), line, fill=ink, font=title_font)
    d.rectangle([0, h - AUTHOR_PX - 6, w, h], fill=band)
    d.text((4, h - AUTHOR_PX - 4), _drawable(author), fill=ink, font=author_font)


def render_cover(book_genre: str, title: str, author: str, size: tuple[int, int],
                 rng: np.random.Generator) -> bytes:
    """Palette and motif are the genre signal; jitter and noise stop the model memorising pixels."""
    bg, accent, band = _palette(book_genre)
    img = Image.new("RGB", size, _jitter(rng, bg, 14))
    d = ImageDraw.Draw(img)
    cols = [_jitter(rng, accent, 20), _jitter(rng, band, 20)]
    _MOTIFS[BOOKCOVER30_GENRES.index(book_genre) % _MOTIF_COUNT](d, rng, size[0], size[1], cols)
    ink = (20, 20, 20) if sum(band) > 380 else (240, 240, 240)
    _draw_text(d, rng, title, author, size, _jitter(rng, band, 10), ink)
    pixels = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, size=(size[1], size[0], 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
