"""Every detector, in priority order (the first that finds its fact wins; see ``base``).

Adding a fact source is one file in this package and one line below.
"""

from __future__ import annotations

from bot.image.detectors import (
    alpine_release,
    apk,
    chisel,
    debian_version,
    dpkg,
    dpkg_status_d,
    group,
    java,
    node,
    os_release,
    passwd,
    python,
    rpm_bdb,
    rpm_ndb,
    rpm_sqlite,
)
from bot.image.detectors.base import Detector, Value, is_glob

DETECTORS: tuple[Detector, ...] = (
    os_release.DETECTOR,
    alpine_release.DETECTOR,
    debian_version.DETECTOR,
    dpkg.DETECTOR,
    dpkg_status_d.DETECTOR,
    apk.DETECTOR,
    rpm_sqlite.DETECTOR,
    rpm_bdb.DETECTOR,
    rpm_ndb.DETECTOR,
    chisel.DETECTOR,
    passwd.DETECTOR,
    group.DETECTOR,
    python.DETECTOR,
    node.HEADERS,
    node.BINARY,
    java.DETECTOR,
)

BY_NAME: dict[str, Detector] = {d.name: d for d in DETECTORS}
_EXACT: dict[str, Detector] = {}
for _detector in DETECTORS:
    for _path in _detector.paths:
        if not is_glob(_path):
            _EXACT.setdefault(_path, _detector)
_GLOBBED = tuple(d for d in DETECTORS if any(is_glob(p) for p in d.paths))
# What every glob path starts with (up to its first ``*``): most paths of a layer start
# with none of these, and one ``str.startswith`` rules them out for all globbing detectors.
_GLOB_PREFIXES = tuple(
    sorted({p.partition("*")[0] for d in _GLOBBED for p in d.paths if is_glob(p)})
)
SNIFFERS = tuple(d for d in DETECTORS if d.sniff is not None)
SNIFF_MAX = max((d.cap for d in SNIFFERS), default=0)


def wanted(path: str) -> Detector | None:
    """The detector that wants ``path`` (normalised, relative), if any."""
    found = _EXACT.get(path)
    if found is not None:
        return found
    if not path.startswith(_GLOB_PREFIXES):
        return None
    for detector in _GLOBBED:
        if detector.wants(path):
            return detector
    return None


def sniffed(head: bytes, size: int) -> Detector | None:
    """The detector that recognises a file by its first bytes (and whose cap it fits)."""
    for detector in SNIFFERS:
        assert detector.sniff is not None
        if size <= detector.cap and detector.sniff(head):
            return detector
    return None


__all__ = ["BY_NAME", "DETECTORS", "SNIFF_MAX", "Detector", "Value", "sniffed", "wanted"]
