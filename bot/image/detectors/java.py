"""Java: the ``release`` file every JDK/JRE build carries in its home (``JAVA_VERSION=``),
where Debian, Eclipse Temurin and the openjdk images put it."""

from __future__ import annotations

from bot.image import parsers
from bot.image.detectors.base import KIB, Detector, Value
from bot.image.detectors.runtimes import runtime


def _parse(data: bytes, path: str) -> Value:
    fields = parsers.parse_os_release(data)
    if "JAVA_VERSION" not in fields and "IMPLEMENTOR" not in fields:
        return None
    return {"version": fields.get("JAVA_VERSION"), "home": path.rpartition("/")[0]}


DETECTOR = Detector(
    name="java",
    fact="runtime",
    paths=(
        "usr/lib/jvm/*/release",
        "opt/java/*/release",
        "usr/local/openjdk-*/release",
        "opt/*/release",
    ),
    cap=64 * KIB,
    parse=_parse,
    yields=runtime("java"),
)
