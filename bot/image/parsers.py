"""Parsers for the few files inside an image that tell what it is.

Pure functions over bytes already read into memory (size-capped by the layer reader):
``os-release``, the dpkg status database (one file or distroless ``status.d/``), the apk
installed database and the rpm sqlite database (given as a path to a private temp copy).
"""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
from pathlib import Path

# Where the user space identifies itself, most authoritative first.
OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")
ALPINE_RELEASE = "etc/alpine-release"
DEBIAN_VERSION = "etc/debian_version"
DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d"
APK_INSTALLED = "lib/apk/db/installed"
RPM_SQLITE_PATHS = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite")

KIB = 1024
MIB = 1024 * KIB
OS_RELEASE_CAP = 64 * KIB
DPKG_CAP = 32 * MIB
APK_CAP = 16 * MIB
RPM_CAP = 64 * MIB


def parse_os_release(data: bytes) -> dict[str, str]:
    """``KEY=value`` lines with shell-style quoting; comments and junk lines ignored."""
    fields: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if not key.isidentifier():
            continue
        try:
            parts = shlex.split(value, comments=False, posix=True)
        except ValueError:
            parts = [value.strip().strip("\"'")]
        fields[key] = " ".join(parts)
    return fields


def first_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0].strip() if text else ""


def _stanzas(data: bytes) -> list[dict[str, str]]:
    """RFC 822-style paragraphs (dpkg status); continuation lines are skipped."""
    out: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            if current:
                out.append(current)
                current = {}
            continue
        if line[0] in " \t":
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        out.append(current)
    return out


def _installed(status: str) -> bool:
    """``Status: WANT FLAG STATE``: installed when the state is ``installed`` and the flag
    ``ok`` (``install ok installed``, also ``hold ok installed``), as dpkg-query counts."""
    words = status.split()
    return len(words) == 3 and words[1] == "ok" and words[2] == "installed"


def count_dpkg_status(data: bytes) -> int:
    """Installed packages in a dpkg ``status`` file."""
    return sum(
        1
        for stanza in _stanzas(data)
        if "package" in stanza and _installed(stanza.get("status", ""))
    )


def count_dpkg_status_d(data: bytes) -> int:
    """A distroless ``status.d`` file: normally one package; counted by stanzas that are
    installed (or carry no Status field at all, as distroless writes them)."""
    count = 0
    for stanza in _stanzas(data):
        if "package" not in stanza:
            continue
        status = stanza.get("status")
        if status is None or _installed(status):
            count += 1
    return count


def count_apk_installed(data: bytes) -> int:
    """apk's installed database: one ``P:`` (package name) line per record."""
    return sum(1 for line in data.split(b"\n") if line.startswith(b"P:"))


def count_rpm_sqlite(path: Path) -> int | None:
    """Rows in the ``Packages`` table of an rpm sqlite db (a private copy, opened read-only)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT count(*) FROM Packages").fetchone()
        return int(row[0]) if row else None
    except sqlite3.Error:
        return None
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


__all__ = [
    "ALPINE_RELEASE",
    "APK_CAP",
    "APK_INSTALLED",
    "DEBIAN_VERSION",
    "DPKG_CAP",
    "DPKG_STATUS",
    "DPKG_STATUS_D",
    "OS_RELEASE_CAP",
    "OS_RELEASE_PATHS",
    "RPM_CAP",
    "RPM_SQLITE_PATHS",
    "count_apk_installed",
    "count_dpkg_status",
    "count_dpkg_status_d",
    "count_rpm_sqlite",
    "first_line",
    "parse_os_release",
]
