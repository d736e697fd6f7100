"""The typed facts about one image, and their JSON shape (``dockwise explain --json``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8 text: an undecodable byte kept by surrogateescape (a file
    name like ``caf\\xe9.bin`` in Latin-1) becomes ``\\xe9``; any other lone surrogate
    (possible in JSON image configs) becomes ``\\udXXX``. Valid text is unchanged."""
    if _SURROGATE.search(text) is None:
        return text

    def escape(match: re.Match[str]) -> str:
        code = ord(match[0])
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return _SURROGATE.sub(escape, text)


def safe(value: Any) -> Any:
    """``safe_text`` on every string inside lists and dicts (keys too)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, list):
        return [safe(v) for v in value]
    if isinstance(value, dict):
        return {safe(k): safe(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class OsInfo:
    id: str | None
    version_id: str | None
    pretty_name: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version_id": self.version_id, "pretty_name": self.pretty_name}


@dataclass(frozen=True, slots=True)
class PackageInfo:
    manager: str  # "dpkg", "apk", "rpm" or "chisel" (deb packages Ubuntu's chisel cut)
    count: int | None  # None: the database exists but could not be read (too big, corrupt)
    database: str | None = None  # absolute path of the database read, e.g. /var/lib/rpm/Packages

    def to_json(self) -> dict[str, Any]:
        return {"manager": self.manager, "count": self.count, "database": self.database}


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    """A language runtime found in the image's files."""

    name: str  # "python", "node", "java"
    version: str | None  # as precise as the files (or the official images' ENV) tell
    path: str  # where: the runtime's home or file, absolute

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": self.path}


@dataclass(frozen=True, slots=True)
class LayerFact:
    """One history entry. ``empty`` entries (ENV, CMD, ...) have no filesystem layer, so no
    digest; ``size`` is the layer's uncompressed tar size in bytes (0 for empty entries)."""

    digest: str | None
    size: int | None
    created_by: str
    empty: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "created_by": self.created_by,
            "empty": self.empty,
        }


@dataclass(frozen=True, slots=True)
class SizeInfo:
    compressed: int | None  # sum of blob sizes; None when the source cannot tell (engine)
    uncompressed: int | None  # sum of tar stream bytes of every layer

    def to_json(self) -> dict[str, Any]:
        return {"compressed": self.compressed, "uncompressed": self.uncompressed}


@dataclass(frozen=True, slots=True)
class Waste:
    """One path that cost space more than once (dive's definition), for advice."""

    path: str
    size: int
    layers: tuple[int, ...]  # indexes into the filesystem layers, bottom to top


@dataclass(slots=True)
class ImageFacts:
    reference: str
    source: Literal["registry", "docker"]
    digest: str | None
    platform: str
    platforms: list[str]
    created: str | None
    os: OsInfo | None
    scratch: bool
    packages: PackageInfo | None
    shell: bool
    user: str
    runs_as_root: bool
    entrypoint: list[str] | None
    cmd: list[str] | None
    workdir: str
    exposed_ports: list[str]
    env: dict[str, str]  # secrets already replaced by <redacted>
    labels: dict[str, str]
    base_image: str | None
    layers: list[LayerFact]
    size: SizeInfo
    wasted_bytes: int
    advice: list[str] = field(default_factory=list)
    text: str = ""
    uid: int | None = 0  # USER resolved in the image's /etc/passwd; None: not found there
    gid: int | None = 0
    user_found: bool = True  # False: `docker run` fails with "unable to find user"
    # Where credentials were found (never their values): {"where": "env"|"label"|"history",
    # "name": ENV name, label key or history index, "rule": the rule id that matched}.
    secrets: list[dict[str, str]] = field(default_factory=list)
    runtimes: list[RuntimeInfo] = field(default_factory=list)
    # What user space the image brings: "distribution" (a distro with a package manager or a
    # shell), "distroless" (a distro's files and package list, no package manager, no
    # shell), "busybox" (no distro; BusyBox's commands), "runtime" (no distro; a language
    # runtime), "static" (only its own files, no shell), "files" (only its own files and
    # a shell that is not BusyBox).
    userspace: str = ""  # "" (facts made by hand): derived by userspace_kind()
    # The base named by layer matching (see bot.image.explain.base_match): reference,
    # digest, layers (how many bottom layers match), of (this image's layers), confidence
    # ("high" | "medium"), also (other names with the same layers). None: no match seen.
    base_match: dict[str, Any] | None = None
    # Not part of the JSON: inputs for advice and rendering.
    secret_env: list[str] = field(default_factory=list)  # names only, never values
    shell_path: str | None = None
    waste: list[Waste] = field(default_factory=list)

    def userspace_kind(self) -> str:
        """``userspace``, or for facts that lack it, what the other facts imply."""
        if self.userspace:
            return self.userspace
        if self.os is not None or self.packages is not None:
            return "distribution" if self.shell else "distroless"
        return "files" if self.shell else "static"

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape: every string valid UTF-8 (see ``safe_text``)."""
        doc: dict[str, Any] = safe(self._json())
        return doc

    def _json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "source": self.source,
            "digest": self.digest,
            "platform": self.platform,
            "platforms": list(self.platforms),
            "created": self.created,
            "os": self.os.to_json() if self.os else None,
            "scratch": self.scratch,
            "packages": self.packages.to_json() if self.packages else None,
            "shell": self.shell,
            "user": self.user,
            "runs_as_root": self.runs_as_root,
            "uid": self.uid,
            "gid": self.gid,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "cmd": list(self.cmd) if self.cmd is not None else None,
            "workdir": self.workdir,
            "exposed_ports": list(self.exposed_ports),
            "env": dict(self.env),
            "labels": dict(self.labels),
            "base_image": self.base_image,
            "layers": [layer.to_json() for layer in self.layers],
            "size": self.size.to_json(),
            "wasted_bytes": self.wasted_bytes,
            "secrets": [dict(item) for item in self.secrets],
            "runtimes": [runtime.to_json() for runtime in self.runtimes],
            "userspace": self.userspace_kind(),
            "base_match": dict(self.base_match) if self.base_match else None,
            "advice": list(self.advice),
            "text": self.text,
        }


__all__ = [
    "ImageFacts",
    "LayerFact",
    "OsInfo",
    "PackageInfo",
    "RuntimeInfo",
    "SizeInfo",
    "Waste",
    "safe",
    "safe_text",
]
