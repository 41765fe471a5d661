"""Which script a title is written in (Latin, Cyrillic, CJK, ...): a feature the listing drift measures,
kept apart from the statistics of tasks/monitor/drift.py."""

from __future__ import annotations

import bisect

# Unicode blocks of each script's letters (hex first-last); any other letter is "other".
_SCRIPT_BLOCKS_HEX = {
    "latin": "0041-005A 0061-007A 00C0-024F 0250-02AF 1E00-1EFF 2C60-2C7F A720-A7FF FF21-FF3A FF41-FF5A",
    "greek": "0370-03FF 1F00-1FFF",
    "cyrillic": "0400-052F 1C80-1C8F 2DE0-2DFF A640-A69F",
    "hebrew": "0590-05FF FB1D-FB4F",
    "arabic": "0600-06FF 0750-077F 08A0-08FF FB50-FDFF FE70-FEFF",
    "devanagari": "0900-097F A8E0-A8FF",
    "thai": "0E00-0E7F",
    "hangul": "1100-11FF 3130-318F A960-A97F AC00-D7FF",  # and below, cjk: Han, hiragana, katakana
    "cjk": "3005-3007 3040-30FF 31F0-31FF 3400-4DBF 4E00-9FFF F900-FAFF FF66-FF9F 20000-3FFFF",
}
_SCRIPT_BLOCKS = sorted(
    (int(a, 16), int(b, 16), script)
    for script, blocks in _SCRIPT_BLOCKS_HEX.items()
    for a, b in (block.split("-") for block in blocks.split())
)
_BLOCK_STARTS = [first for first, _, _ in _SCRIPT_BLOCKS]


def dominant_script(text: str | None) -> str:
    """The script most of a title's letters are in: a new market or a broken decoder shows up here first."""
    if not isinstance(text, str) or not text:
        return "none"
    if text.isascii():  # nearly every title: skip the per-letter loop
        return "latin" if text.lower() != text.upper() else "none"
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            i = bisect.bisect_right(_BLOCK_STARTS, ord(char)) - 1
            script = _SCRIPT_BLOCKS[i][2] if i >= 0 and ord(char) <= _SCRIPT_BLOCKS[i][1] else "other"
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.__getitem__) if counts else "none"  # ties: the script met first
