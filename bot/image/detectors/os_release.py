"""os-release (freedesktop.org): ``etc/os-release``, else ``usr/lib/os-release``."""

from __future__ import annotations

from typing import Any

from bot.image import parsers
from bot.image.detectors.base import Detector, Value, text_head, unused_path


def _yields(value: Value, path: str) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not value:
        return None
    return {
        "id": value.get("ID"),
        "version_id": value.get("VERSION_ID"),
        "pretty_name": value.get("PRETTY_NAME"),
    }


def _sniff(head: bytes) -> bool:
    lines = [
        line.strip() for line in text_head(head).splitlines()[:-1] if line.strip()
    ]  # the last line may be cut
    keys = [line.partition("=")[0] for line in lines if not line.startswith("#")]
    return "ID" in keys and all(k.isidentifier() and k.isupper() for k in keys)


DETECTOR = Detector(
    name="os_release",
    fact="os",
    paths=parsers.OS_RELEASE_PATHS,
    cap=parsers.OS_RELEASE_CAP,
    parse=unused_path(parsers.parse_os_release),
    yields=_yields,
    sniff=_sniff,
)
