"""Node.js: the headers the official images install (``include/node/node_version.h``,
whose NODE_MAJOR/MINOR/PATCH_VERSION defines give the version), or the ``node`` binary."""

from __future__ import annotations

import re

from bot.image.detectors.base import KIB, Detector, Value
from bot.image.detectors.runtimes import runtime

_DEFINE = re.compile(rb"^#define\s+NODE_(MAJOR|MINOR|PATCH)_VERSION\s+(\d+)\s*$", re.M)


def _parse(data: bytes, path: str) -> Value:
    """The install prefix (``usr/local`` for both its binary and its headers) and version."""
    marker = "/bin/" if "/bin/" in path else "/include/"
    home = path.partition(marker)[0]
    parts = {m[1].decode(): m[2].decode() for m in _DEFINE.finditer(data)}
    if set(parts) != {"MAJOR", "MINOR", "PATCH"}:
        return {"version": None, "home": home}
    return {"version": f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}", "home": home}


HEADERS = Detector(
    name="node_headers",
    fact="runtime",
    paths=("usr/local/include/node/node_version.h", "usr/include/node/node_version.h"),
    cap=256 * KIB,
    parse=_parse,
    yields=runtime("node"),
)
BINARY = Detector(
    name="node",
    fact="runtime",
    paths=("usr/local/bin/node", "usr/bin/node", "usr/bin/nodejs"),
    cap=0,
    parse=_parse,
    yields=runtime("node"),
    read=False,
)
