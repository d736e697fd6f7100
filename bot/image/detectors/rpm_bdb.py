"""rpm's Berkeley DB ``Packages`` (rpm <= 4.15: UBI 8, CentOS 7/8, Amazon Linux 2)."""

from __future__ import annotations

import struct

from bot.image import parsers, rpmdb
from bot.image.detectors.base import Detector, file_parser
from bot.image.detectors.packages import count_of


def _sniff(head: bytes) -> bool:
    if len(head) < 16:
        return False
    return rpmdb.BDB_HASH_MAGIC in struct.unpack_from("<I", head, 12) + struct.unpack_from(
        ">I", head, 12
    )


DETECTOR = Detector(
    name="rpm_bdb",
    fact="packages",
    paths=("var/lib/rpm/Packages", "usr/lib/sysimage/rpm/Packages"),
    cap=parsers.RPM_CAP,
    parse=file_parser(rpmdb.count_bdb_packages),
    yields=count_of("rpm"),
    sniff=_sniff,
    spool=True,
    manager="rpm",
)
