"""``etc/alpine-release``: the Alpine version when os-release is missing."""

from __future__ import annotations

from typing import Any

from bot.image import parsers
from bot.image.detectors.base import Detector, Value, unused_path


def _yields(value: Value, path: str) -> dict[str, Any] | None:
    if not isinstance(value, str):
        return None
    return {
        "id": "alpine",
        "version_id": value or None,
        "pretty_name": f"Alpine Linux v{value}".strip(),
    }


DETECTOR = Detector(
    name="alpine_release",
    fact="os",
    paths=(parsers.ALPINE_RELEASE,),
    cap=parsers.OS_RELEASE_CAP,
    parse=unused_path(parsers.first_line),
    yields=_yields,
)
