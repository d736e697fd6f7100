"""Installed package lists (name, version, installed size) for comparing two images.

``ImageFacts`` carries only the package manager and count. A comparison needs the names:
this module finds, from the layer scans the explainer already cached, the one layer that
holds each package database file the stacked image shows (the topmost writer), reads just
that file from that layer, and parses it:

- dpkg ``var/lib/dpkg/status`` (``Installed-Size`` is in KiB) and distroless
  ``var/lib/dpkg/status.d/*`` files;
- apk ``lib/apk/db/installed`` (``I:`` is the installed size in bytes).

rpm databases are not listed (the count in ``ImageFacts`` stays the only rpm fact). Each
parsed file is cached by (layer digest, path) in the explainer's layer cache, and callers
pass every (layer, path) they need at once, so a layer two images share is read once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from bot.errors import ContentError
from bot.image.source import LayerBlob, ResolvedImage

if TYPE_CHECKING:
    from bot.image.explain import Explainer
    from bot.image.layers import LayerScan

PACKAGES_VERSION = 1
DB_CAP = 32 * 1024 * 1024  # bytes of one package database file
SPOOL_IN_MEMORY = 8 * 1024 * 1024
DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d"
APK_INSTALLED = ("lib/apk/db/installed", "usr/lib/apk/db/installed")
Manager = Literal["dpkg", "apk"]


@dataclass(frozen=True, slots=True)
class Package:
    name: str
    version: str
    size: int | None  # installed size in bytes, when the database says

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "size": self.size}


@dataclass(frozen=True, slots=True)
class PackageList:
    manager: Manager
    packages: dict[str, Package]


# --------------------------------------------------------------------------- parsers


def _paragraphs(data: bytes) -> Iterable[dict[str, str]]:
    current: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            if current:
                yield current
                current = {}
            continue
        if line[0] in " \t":
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        yield current


def parse_dpkg(data: bytes, *, status_required: bool = True) -> list[Package]:
    """Installed packages of a dpkg status file (``install ok installed``; distroless
    ``status.d`` files may have no Status at all: ``status_required=False``)."""
    out = []
    for para in _paragraphs(data):
        name = para.get("package")
        if not name:
            continue
        status = para.get("status")
        if status is None and status_required:
            continue
        if status is not None:
            words = status.split()
            if len(words) != 3 or words[1] != "ok" or words[2] != "installed":
                continue
        arch = para.get("architecture", "")
        if arch and arch not in ("all",) and para.get("multi-arch") == "same":
            name = f"{name}:{arch}"
        size = para.get("installed-size", "")
        out.append(
            Package(name, para.get("version", ""), int(size) * 1024 if size.isdigit() else None)
        )
    return out


def parse_apk(data: bytes) -> list[Package]:
    """apk's installed database: records of ``P:`` name, ``V:`` version, ``I:`` bytes."""
    out = []
    record: dict[str, str] = {}
    for raw in [*data.decode("utf-8", "replace").split("\n"), ""]:
        if not raw.strip():
            if record.get("P"):
                size = record.get("I", "")
                out.append(
                    Package(record["P"], record.get("V", ""), int(size) if size.isdigit() else None)
                )
            record = {}
            continue
        if len(raw) > 2 and raw[1] == ":":
            record.setdefault(raw[0], raw[2:].strip())
    return out


# --------------------------------------------------------------------------- where the files are


def _present_files(scans: list[LayerScan], wanted: Any) -> dict[str, int]:
    """path -> index of the layer whose copy the stacked image shows, for regular files
    matching ``wanted(path)``; whiteouts and opaque directories remove lower copies."""
    present: dict[str, int] = {}
    for index, scan in enumerate(scans):
        for directory in scan.opaque:
            prefix = directory + "/"
            for path in [p for p in present if p.startswith(prefix)]:
                del present[path]
        for gone in scan.whiteouts:
            prefix = gone + "/"
            for path in [p for p in present if p == gone or p.startswith(prefix)]:
                del present[path]
        for path, entry in scan.entries.items():
            if not wanted(path):
                continue
            if entry.kind == "f":
                present[path] = index
            else:
                present.pop(path, None)
    return present


def locate(scans: list[LayerScan]) -> tuple[Manager, dict[str, int]] | None:
    """The package database files of the stacked image and the layer holding each."""

    def is_status_d(path: str) -> bool:
        parent, _, base = path.rpartition("/")
        return parent == DPKG_STATUS_D and not base.endswith(".md5sums")

    dpkg = _present_files(scans, lambda p: p == DPKG_STATUS or is_status_d(p))
    if dpkg:
        return "dpkg", dpkg
    apk = _present_files(scans, lambda p: p in APK_INSTALLED)
    if apk:
        return "apk", dict(sorted(apk.items())[:1])
    return None


# --------------------------------------------------------------------------- reading


def _extract(spool: IO[bytes], compression: str, wanted: set[str], digest: str) -> dict[str, bytes]:
    from bot.image.layers import normalise

    spool.seek(0)
    stream: Any
    if compression == "gzip":
        from isal import igzip

        stream = igzip.GzipFile(fileobj=spool, mode="rb")  # type: ignore[no-untyped-call]
    elif compression == "zstd":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(spool, read_across_frames=True)
    else:
        stream = spool
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for member in tf:
                path = normalise(member.name)
                if path is None or path not in wanted or not member.isreg():
                    continue
                if member.size > DB_CAP:
                    raise ContentError(f"{path} in layer {digest[:19]} is over 32 MiB")
                handle = tf.extractfile(member)
                if handle is not None:
                    found[path] = handle.read(DB_CAP)
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ContentError(f"layer {digest[:19]} could not be read again ({exc})") from None
    return found


async def read_files(blob: LayerBlob, paths: set[str], tmp_dir: Path) -> dict[str, bytes]:
    """The bytes of ``paths`` (regular files) in one layer: the blob is streamed once into
    a spool file (digest checks happen as the source reads it), then walked in a thread."""
    await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=str(tmp_dir))  # noqa: SIM115
    try:
        async for chunk in blob.open():
            await asyncio.to_thread(spool.write, chunk)
        return await asyncio.to_thread(_extract, spool, blob.compression, paths, blob.digest)
    finally:
        with contextlib.suppress(OSError):
            spool.close()


def _cache_key(blob: LayerBlob, path: str) -> str:
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return f"dockwise-packages:v{PACKAGES_VERSION}:{blob.digest}:{digest}"


async def package_lists(
    explainer: Explainer, images: list[ResolvedImage]
) -> list[PackageList | None]:
    """One ``PackageList`` per image (None: no dpkg/apk database). Every database file is
    read once across ``images``: a layer two images share is downloaded at most once."""
    located: list[tuple[Manager, dict[str, int]] | None] = []
    for resolved in images:
        scans = [await explainer.scan(blob, image=resolved.reference) for blob in resolved.layers]
        located.append(locate(scans))
    parsed: dict[tuple[str, str], list[Package]] = {}
    to_read: dict[str, tuple[LayerBlob, set[str]]] = {}
    for resolved, found in zip(images, located, strict=True):
        if found is None:
            continue
        for path, index in found[1].items():
            blob = resolved.layers[index]
            key = (blob.digest, path)
            if key in parsed:
                continue
            doc = await explainer.layer_cache.get(_cache_key(blob, path))
            if doc is not None and doc.get("v") == PACKAGES_VERSION:
                parsed[key] = [Package(n, v, s) for n, v, s in doc["packages"]]
                continue
            to_read.setdefault(blob.digest, (blob, set()))[1].add(path)

    async def read(blob: LayerBlob, paths: set[str]) -> None:
        files = await read_files(blob, paths, explainer.settings.cache_dir / "tmp")
        for path in paths:
            data = files.get(path, b"")
            if path == DPKG_STATUS:
                packages = parse_dpkg(data)
            elif path.startswith(DPKG_STATUS_D + "/"):
                packages = parse_dpkg(data, status_required=False)
            else:
                packages = parse_apk(data)
            parsed[(blob.digest, path)] = packages
            await explainer.layer_cache.put(
                _cache_key(blob, path),
                {
                    "v": PACKAGES_VERSION,
                    "packages": [[p.name, p.version, p.size] for p in packages],
                },
            )

    await asyncio.gather(*(read(blob, paths) for blob, paths in to_read.values()))
    out: list[PackageList | None] = []
    for resolved, found in zip(images, located, strict=True):
        if found is None:
            out.append(None)
            continue
        manager, files = found
        merged: dict[str, Package] = {}
        for path, index in sorted(files.items()):
            for package in parsed.get((resolved.layers[index].digest, path), []):
                merged[package.name] = package
        out.append(PackageList(manager, merged))
    return out


__all__ = ["Package", "PackageList", "locate", "package_lists", "parse_apk", "parse_dpkg"]
