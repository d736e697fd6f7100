"""Property-based fuzzing (hypothesis) of everything that reads image content: manifest and
index parsing with platform picking, the layer scanner (random and mutated tar streams,
plain and gzip), and the os-release / dpkg / apk parsers.

Contract: on hostile input the code either succeeds with structurally sound results or raises
``ContentError``; never another exception. The reference parser is fuzzed in
tests/test_reference.py. Example counts stay modest so the suite is quick on 2 cores.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ContentError
from bot.image import parsers
from bot.image.layers import LayerScan, ScanLimits, normalise, scan_layer
from bot.image.reference import parse_reference
from bot.image.registry import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    _index_entries,
    _manifest,
    compression_for,
    pick_platform,
)
from bot.image.source import Platform
from tests.fixtures.hostile import digest_of, memory_blob

FUZZ = settings(
    # DOCKWISE_FUZZ_EXAMPLES=5000 for a longer hunt
    max_examples=int(os.environ.get("DOCKWISE_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
REF = parse_reference("registry.example/fuzz/app:1")

# --------------------------------------------------------------------------- manifests

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
words = st.sampled_from(["linux", "windows", "amd64", "arm64", "arm", "unknown", "v7", "v8", ""])
platform_docs = st.fixed_dictionaries(
    {"os": words | json_scalars, "architecture": words | json_scalars},
    optional={"variant": words | json_scalars},
)
digests = st.sampled_from(["sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:zz", "md5:1"])
index_entries = st.fixed_dictionaries(
    {"digest": digests | json_scalars},
    optional={"platform": platform_docs | json_values, "mediaType": st.text(max_size=10)},
)
media_types = st.sampled_from(sorted(INDEX_TYPES | MANIFEST_TYPES)) | st.text(max_size=20)
manifest_docs = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.sampled_from([1, 2, "2"]) | json_scalars,
        "mediaType": media_types,
        "manifests": st.lists(index_entries, max_size=6) | json_values,
        "layers": st.lists(json_values, max_size=3) | json_values,
        "config": json_values,
    },
)


@FUZZ
@given(doc=manifest_docs | json_values, content_type=media_types)
def test_manifest_and_index_parsing(doc: Any, content_type: str) -> None:
    body = json.dumps(doc).encode()
    try:
        manifest = _manifest(content_type, digest_of(body), body, REF)
    except ContentError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(manifest.data, dict)
    assert manifest.media_type in INDEX_TYPES | MANIFEST_TYPES
    if not manifest.is_index:
        return
    try:
        entries = _index_entries(manifest, REF)
    except ContentError:
        return
    for plat, entry in entries:
        assert plat.os != "unknown" and plat.architecture != "unknown"
        assert entry in manifest.data["manifests"]
        wanted = Platform(plat.os, plat.architecture, plat.variant)
        picked = pick_platform(entries, wanted)
        assert picked is not None and any(e is picked for _, e in entries)
    assert pick_platform(entries, Platform("no-such-os", "no-such-arch")) is None


@FUZZ
@given(
    plats=st.lists(
        st.builds(
            Platform,
            st.sampled_from(["linux", "windows"]),
            st.sampled_from(["amd64", "arm64", "arm", "386"]),
            st.sampled_from([None, "v5", "v6", "v7", "v8"]),
        ),
        max_size=8,
    ),
    wanted=st.builds(
        Platform,
        st.sampled_from(["linux", "windows"]),
        st.sampled_from(["amd64", "arm64", "arm", "386"]),
        st.sampled_from([None, "v6", "v7", "v8"]),
    ),
)
def test_pick_platform_only_returns_a_matching_entry(
    plats: list[Platform], wanted: Platform
) -> None:
    entries = [(p, {"n": i}) for i, p in enumerate(plats)]
    picked = pick_platform(entries, wanted)
    if picked is None:
        assert all(
            (p.os, p.architecture) != (wanted.os, wanted.architecture)
            or (wanted.variant is not None)
            for p in plats
        )
        return
    plat = plats[picked["n"]]
    assert (plat.os, plat.architecture) == (wanted.os, wanted.architecture)


@FUZZ
@given(st.text(max_size=60))
def test_layer_media_types(media_type: str) -> None:
    try:
        assert compression_for(media_type) in ("gzip", "zstd", "none")
    except ContentError as exc:
        assert "\n" not in str(exc)


# --------------------------------------------------------------------------- layer scanner

names = st.lists(
    st.sampled_from([*"abc./\\-_", "..", "etc/os-release", ".wh.", "\u00e9", "/"]),
    min_size=1,
    max_size=12,
).map("".join)
members = st.lists(
    st.tuples(
        names,
        st.sampled_from(["file", "dir", "sym", "hard", "fifo"]),
        st.binary(max_size=300),
        names,
    ),
    max_size=8,
)
TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "hard": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def build_tar(items: list[tuple[str, str, bytes, str]], fmt: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, kind, data, target in items:
            info = tarfile.TarInfo(name)
            info.type = TYPES[kind]
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = target if kind in ("sym", "hard") else ""
                tar.addfile(info)
    return raw.getvalue()


def run_scan(data: bytes, compression: Any, tmp: Path) -> LayerScan | None:
    limits = ScanLimits(max_layer_uncompressed=4 * 1024 * 1024, max_header=64 * 1024)

    async def go() -> LayerScan:
        return await asyncio.wait_for(
            scan_layer(memory_blob(data, compression, 997), tmp, limits), 30
        )

    try:
        return asyncio.run(go())
    except ContentError as exc:
        assert "\n" not in str(exc)
        return None


def check_scan(scan: LayerScan) -> None:
    for path, entry in scan.entries.items():
        assert normalise(path) == path  # relative, no "..", no empty parts
        assert entry.size >= 0
        if entry.kind == "h":
            assert entry.link is not None and normalise(entry.link) == entry.link
    for path in scan.whiteouts + [p for p in scan.opaque if p]:
        assert ".." not in path.split("/") and not path.startswith("/")
    assert scan.uncompressed >= 0
    assert LayerScan.from_dict(json.loads(json.dumps(scan.to_dict()))) == scan


@FUZZ
@given(data=st.binary(max_size=4096), compression=st.sampled_from(["none", "gzip", "zstd"]))
def test_random_bytes_into_the_layer_scanner(data: bytes, compression: str, tmp_path: Path) -> None:
    scan = run_scan(data, compression, tmp_path / "tmp")
    if scan is not None:
        check_scan(scan)


@FUZZ
@given(
    items=members,
    fmt=st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]),
    mutations=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 1 << 20),
    compress=st.booleans(),
)
def test_mutated_tars_into_the_layer_scanner(
    items: list[tuple[str, str, bytes, str]],
    fmt: int,
    mutations: list[tuple[int, int]],
    cut: int | None,
    compress: bool,
    tmp_path: Path,
) -> None:
    try:
        data = bytearray(build_tar(items, fmt))
    except (ValueError, UnicodeError):
        return  # tarfile cannot write this name in this format: nothing to scan
    for position, value in mutations:
        data[position % len(data)] = value
    raw = bytes(data[: cut % (len(data) + 1)] if cut is not None else data)
    scan = run_scan(
        gzip.compress(raw, mtime=0) if compress else raw,
        "gzip" if compress else "none",
        tmp_path / "tmp",
    )
    if scan is None:
        return
    check_scan(scan)
    if not compress:
        assert scan.uncompressed == len(raw)  # the stream is read to its end
    if not mutations and cut is None:
        for name, kind, payload, _ in items:
            path = normalise(name)
            if (
                kind == "file"
                and path is not None
                and not path.rpartition("/")[2].startswith(".wh.")
            ):
                later = [n for n, *_ in items[items.index((name, kind, payload, _)) + 1 :]]
                if all(normalise(n) != path for n in later):
                    assert scan.entries[path].size == len(payload)
    if (tmp_path / "tmp").exists():
        assert list((tmp_path / "tmp").iterdir()) == []  # temp copies are removed


# --------------------------------------------------------------------------- parsers

text_lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(r"[A-Z_]{1,8}=.{0,20}", fullmatch=True),
        st.sampled_from(
            [
                'ID="a b',
                "ID='x'",
                "=",
                "#ID=x",
                "ID=$(x)",
                "P:",
                "Package: p",
                "Status: install ok installed",
                " continuation",
                "",
            ]
        ),
    ),
    max_size=30,
)
blobs = st.binary(max_size=2000) | text_lines.map(
    lambda ls: "\n".join(ls).encode("utf-8", "replace")
)


@FUZZ
@given(blobs)
def test_os_release_parser(data: bytes) -> None:
    fields = parsers.parse_os_release(data)
    assert all(isinstance(k, str) and k.isidentifier() for k in fields)
    assert all(isinstance(v, str) for v in fields.values())
    line = parsers.first_line(data)
    assert "\n" not in line and line == line.strip()


@FUZZ
@given(blobs)
def test_package_counters_never_crash(data: bytes) -> None:
    dpkg = parsers.count_dpkg_status(data)
    dpkg_d = parsers.count_dpkg_status_d(data)
    apk = parsers.count_apk_installed(data)
    assert dpkg >= 0 and dpkg_d >= 0 and apk >= 0
    # Every counted package needs a line of its own: a "Package:" field or a "P:" record.
    lines = data.decode("utf-8", "replace").splitlines()
    assert dpkg <= dpkg_d <= sum(1 for line in lines if ":" in line)
    assert apk <= data.count(b"P:")


pkg_names = st.from_regex(r"[a-z0-9][a-z0-9+.-]{0,15}", fullmatch=True)


@FUZZ
@given(
    installed=st.lists(pkg_names, max_size=20),
    removed=st.lists(pkg_names, max_size=5),
    junk=st.lists(st.text(alphabet="abc: \t", max_size=10), max_size=5),
)
def test_dpkg_and_apk_counts_match_generated_databases(
    installed: list[str], removed: list[str], junk: list[str]
) -> None:
    stanzas = [f"Package: {n}\nStatus: install ok installed\nVersion: 1\n" for n in installed]
    stanzas += [f"Package: {n}\nStatus: deinstall ok config-files\n" for n in removed]
    stanzas += [f"X-Junk: {j}\n" for j in junk if ":" not in j]
    status = "\n".join(stanzas).encode()
    assert parsers.count_dpkg_status(status) == len(installed)
    apk = "".join(f"C:Q1abc\nP:{n}\nV:1.0\n\n" for n in installed).encode()
    assert parsers.count_apk_installed(apk) == len(installed)
