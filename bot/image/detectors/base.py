"""What a detector is: the paths it wants, a size cap, a parser and the fact it yields.

A detector is one file under ``bot/image/detectors/`` with one ``DETECTOR`` and one line in
``bot/image/detectors/__init__.py`` (model: syft's per-ecosystem catalogers). The layer
reader captures every file a detector wants while it streams a layer (bot.image.layers);
the analysis then looks each wanted path up in the stacked image *through links* (symlinks
absolute and relative, symlinked directories such as ``lib -> usr/lib``, hard links inside
one layer and to files of earlier layers) and turns the captured value into the fact.

A detector may also ``sniff`` a file by its first bytes. A file that sniffs as a detector's
kind is captured under whatever name it has, so a hard link written as the *first* name of
an inode (``ln /var/lib/dpkg/status /var/backups/x`` puts ``var/backups/x`` in the tar and
``var/lib/dpkg/status`` as a link to it) is still read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

FactName = Literal["os", "packages", "users", "groups", "runtime"]
# What a parser returns; stored in the layer cache, so JSON-able.
Value = dict[str, Any] | list[Any] | str | int | None

KIB = 1024
MIB = 1024 * KIB
SNIFF_BYTES = 512  # how much of a file ``sniff`` sees


@dataclass(frozen=True, slots=True)
class Detector:
    """One fact source.

    - ``name``: the capture kind stored per file in a LayerScan (unique, stable: cached).
    - ``fact``: which fact it feeds (os, packages, users, groups, runtime).
    - ``paths``: where its own tool looks, relative to the image root; ``*`` matches within
      one path component (``var/lib/dpkg/status.d/*``). Looked up through links.
    - ``cap``: files bigger than this many bytes are not read (value None: "unreadable").
    - ``parse(data, path)``: the file's bytes -> a JSON-able value (never raises on junk).
      With ``spool=True`` it gets a private temp copy's ``Path`` instead of bytes.
    - ``yields(value, path)``: the value -> the fact's JSON shape (None: nothing usable).
    - ``sniff(head)``: True when the first ``SNIFF_BYTES`` bytes are this kind of file.
    - ``read=False``: the file's presence is the fact; ``parse`` gets ``b""`` (a binary).
    - ``manager``: for package databases, the manager the fact names; databases of the same
      manager with ``additive=True`` add up (dpkg ``status`` + distroless ``status.d``).
    """

    name: str
    fact: FactName
    paths: tuple[str, ...]
    cap: int
    parse: Callable[[Any, str], Value]
    yields: Callable[[Value, str], Any]
    sniff: Callable[[bytes], bool] | None = None
    spool: bool = False
    manager: str | None = None
    additive: bool = False
    skip: Callable[[str], bool] | None = None  # paths a glob matches but the tool ignores
    read: bool = True  # False: the path alone is the fact (``parse(b"", path)``, no bytes read)

    def wants(self, path: str) -> bool:
        """True when ``path`` (normalised, relative) is one of the detector's paths."""
        if self.skip is not None and self.skip(path):
            return False
        return any(_glob(p).fullmatch(path) is not None for p in self.paths)


_GLOBS: dict[str, re.Pattern[str]] = {}


def _glob(pattern: str) -> re.Pattern[str]:
    found = _GLOBS.get(pattern)
    if found is None:
        found = re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))
        _GLOBS[pattern] = found
    return found


def is_glob(pattern: str) -> bool:
    return "*" in pattern


def text_head(head: bytes) -> str:
    return head.decode("utf-8", "replace")


def unused_path(parse: Callable[[bytes], Value]) -> Callable[[Any, str], Value]:
    """Adapt a ``parse(data)`` that does not need the path."""

    def run(data: Any, path: str) -> Value:
        return parse(data)

    return run


def file_parser(parse: Callable[[Path], Value]) -> Callable[[Any, str], Value]:
    def run(data: Any, path: str) -> Value:
        return parse(data)

    return run


__all__ = ["KIB", "MIB", "SNIFF_BYTES", "Detector", "FactName", "Value", "is_glob"]
