"""Ubuntu's chiselled images: ``var/lib/chisel/manifest.wall``, a zstd-compressed jsonwall
(one JSON object per line after a ``{"jsonwall": ...}`` header) listing the deb packages
chisel cut slices from (``{"kind":"package","name":...,"version":...}``), in place of a
dpkg database (see Chisel's "Chisel manifest" reference)."""

from __future__ import annotations

import json

import zstandard

from bot.image.detectors.base import MIB, Detector, unused_path
from bot.image.detectors.packages import count_of

MAX_UNPACKED = 64 * MIB  # bytes of jsonwall one manifest may unpack to


def count_chisel_packages(data: bytes) -> int | None:
    """Package records in a compressed manifest.wall; None when it is not one (or unpacks
    to more than ``MAX_UNPACKED`` bytes)."""
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        text = reader.read(MAX_UNPACKED + 1)
    except zstandard.ZstdError:
        return None
    if len(text) > MAX_UNPACKED:
        return None
    lines = text.split(b"\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        return None
    if not isinstance(header, dict) or "jsonwall" not in header:
        return None
    count = 0
    for line in lines[1:]:
        if b'"package"' not in line:
            continue  # cheap filter: most lines are paths
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("kind") == "package" and record.get("name"):
            count += 1
    return count


DETECTOR = Detector(
    name="chisel",
    fact="packages",
    paths=("var/lib/chisel/manifest.wall",),
    cap=16 * MIB,
    parse=unused_path(count_chisel_packages),
    yields=count_of("chisel"),
    manager="chisel",
)
