"""``etc/group``: group name -> gid, to resolve ``USER user:group``."""

from __future__ import annotations

from typing import Any

from bot.image.detectors.base import MIB, Detector, Value, unused_path


def parse_group(data: bytes) -> dict[str, int]:
    """``name:password:gid:members`` lines; the first entry of a name wins (as getgrnam)."""
    groups: dict[str, int] = {}
    for raw in data.decode("utf-8", "surrogateescape").splitlines():
        fields = raw.split(":")
        if len(fields) < 3 or not fields[0] or raw.startswith(("#", "+", "-")):
            continue
        try:
            groups.setdefault(fields[0], int(fields[2]))
        except ValueError:
            continue
    return groups


def _yields(value: Value, path: str) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


DETECTOR = Detector(
    name="group",
    fact="groups",
    paths=("etc/group",),
    cap=4 * MIB,
    parse=unused_path(parse_group),
    yields=_yields,
)
