"""``etc/passwd``: user name -> [uid, gid], to resolve ``USER name`` as the runtime does."""

from __future__ import annotations

import re
from typing import Any

from bot.image.detectors.base import MIB, Detector, Value, unused_path

_LINE = re.compile(rb"^[^:\s]+:[^:\n]*:\d+:\d+:")


def parse_passwd(data: bytes) -> dict[str, list[int]]:
    """``name:password:uid:gid:gecos:home:shell`` lines; the first entry of a name wins (as
    getpwnam); malformed lines are skipped."""
    users: dict[str, list[int]] = {}
    for raw in data.decode("utf-8", "surrogateescape").splitlines():
        fields = raw.split(":")
        if len(fields) < 4 or not fields[0] or raw.startswith(("#", "+", "-")):
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        users.setdefault(fields[0], [uid, gid])
    return users


def _yields(value: Value, path: str) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


DETECTOR = Detector(
    name="passwd",
    fact="users",
    paths=("etc/passwd",),
    cap=4 * MIB,
    parse=unused_path(parse_passwd),
    yields=_yields,
    sniff=lambda head: _LINE.match(head) is not None,
)
