"""rpm's ndb ``Packages.db`` (openSUSE, SLES 15 and their BCI images)."""

from __future__ import annotations

from bot.image import parsers, rpmdb
from bot.image.detectors.base import Detector, file_parser
from bot.image.detectors.packages import count_of

DETECTOR = Detector(
    name="rpm_ndb",
    fact="packages",
    paths=("var/lib/rpm/Packages.db", "usr/lib/sysimage/rpm/Packages.db"),
    cap=parsers.RPM_CAP,
    parse=file_parser(rpmdb.count_ndb_packages),
    yields=count_of("rpm"),
    sniff=lambda head: head.startswith(rpmdb.NDB_MAGIC),
    spool=True,
    manager="rpm",
)
