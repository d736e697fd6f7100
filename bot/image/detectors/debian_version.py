"""``etc/debian_version``: the Debian point release when os-release is missing."""

from __future__ import annotations

from typing import Any

from bot.image import parsers
from bot.image.detectors.base import Detector, Value, unused_path


def _yields(value: Value, path: str) -> dict[str, Any] | None:
    if not isinstance(value, str):
        return None
    return {
        "id": "debian",
        "version_id": value or None,
        "pretty_name": f"Debian GNU/Linux {value}".strip(),
    }


DETECTOR = Detector(
    name="debian_version",
    fact="os",
    paths=(parsers.DEBIAN_VERSION,),
    cap=parsers.OS_RELEASE_CAP,
    parse=unused_path(parsers.first_line),
    yields=_yields,
)
