"""Python: the standard library's ``os.py`` in ``lib/pythonX.Y`` (Debian's python3.X,
the official images' /usr/local build); the directory names the version."""

from __future__ import annotations

import re

from bot.image.detectors.base import KIB, Detector, Value
from bot.image.detectors.runtimes import runtime

_VERSION = re.compile(r"(?:^|/)lib/python(\d+\.\d+)/os\.py$")


def _parse(data: bytes, path: str) -> Value:
    found = _VERSION.search(path)
    if found is None:
        return None
    return {"version": found[1], "home": path.rpartition("/")[0]}


DETECTOR = Detector(
    name="python",
    fact="runtime",
    paths=("usr/lib/python*/os.py", "usr/local/lib/python*/os.py", "opt/*/lib/python*/os.py"),
    cap=512 * KIB,
    parse=_parse,
    yields=runtime("python"),
    read=False,
)
