"""apk's installed database: ``lib/apk/db/installed``, or ``usr/lib/apk/db/installed`` where
apk-tools is built for a merged /usr (Wolfi, Chainguard, Alpine 3.21+ with usrmerge)."""

from __future__ import annotations

from bot.image import parsers
from bot.image.detectors.base import Detector, unused_path
from bot.image.detectors.packages import count_of


def _sniff(head: bytes) -> bool:
    return (head.startswith(b"C:Q") or head.startswith(b"P:")) and b"\nV:" in head


DETECTOR = Detector(
    name="apk",
    fact="packages",
    paths=(parsers.APK_INSTALLED, "usr/" + parsers.APK_INSTALLED),
    cap=parsers.APK_CAP,
    parse=unused_path(parsers.count_apk_installed),
    yields=count_of("apk"),
    sniff=_sniff,
    manager="apk",
)
