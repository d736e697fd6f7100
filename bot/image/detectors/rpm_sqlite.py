"""rpm >= 4.16's sqlite database (Fedora 33+, RHEL/UBI 9): ``rpmdb.sqlite``."""

from __future__ import annotations

from bot.image import parsers
from bot.image.detectors.base import Detector, file_parser
from bot.image.detectors.packages import count_of

DETECTOR = Detector(
    name="rpm",
    fact="packages",
    paths=parsers.RPM_SQLITE_PATHS,
    cap=parsers.RPM_CAP,
    parse=file_parser(parsers.count_rpm_sqlite),
    yields=count_of("rpm"),
    spool=True,
    manager="rpm",
)
