"""dpkg's database: ``var/lib/dpkg/status`` (installed packages as dpkg-query counts)."""

from __future__ import annotations

from bot.image import parsers
from bot.image.detectors.base import Detector, unused_path
from bot.image.detectors.packages import count_of


def _sniff(head: bytes) -> bool:
    return head.startswith(b"Package: ") and b"\nStatus: " in head


DETECTOR = Detector(
    name="dpkg",
    fact="packages",
    paths=(parsers.DPKG_STATUS,),
    cap=parsers.DPKG_CAP,
    parse=unused_path(parsers.count_dpkg_status),
    yields=count_of("dpkg"),
    sniff=_sniff,
    manager="dpkg",
    additive=True,
)
