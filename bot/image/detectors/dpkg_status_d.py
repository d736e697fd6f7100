"""Distroless' dpkg database: one file per package under ``var/lib/dpkg/status.d/``."""

from __future__ import annotations

from bot.image import parsers
from bot.image.detectors.base import Detector, unused_path
from bot.image.detectors.packages import count_of

DETECTOR = Detector(
    name="dpkg_d",
    fact="packages",
    paths=(f"{parsers.DPKG_STATUS_D}/*",),
    cap=parsers.DPKG_CAP,
    parse=unused_path(parsers.count_dpkg_status_d),
    yields=count_of("dpkg"),
    manager="dpkg",
    additive=True,
    skip=lambda path: path.endswith(".md5sums"),
)
