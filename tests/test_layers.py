"""One streaming pass over real layer tarballs: index, whiteouts, captured files, sizes."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest

from bot.errors import ContentError, Unreachable
from bot.image.layers import Entry, LayerScan, normalise, scan_layer
from bot.image.source import LayerBlob
from tests.fixtures.image_layers import (
    DiskImage,
    DiskSource,
    Member,
    config,
    dir_,
    file,
    hard,
    opaque,
    sized,
    sym,
    whiteout,
    write_layer,
)

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


async def scan_file(tmp_path: Path, members: list[Member], compression: str = "gzip"):
    layer = write_layer(tmp_path / "blobs", members, compression)  # type: ignore[arg-type]
    source = DiskSource({"x": DiskImage([layer], config())})
    resolved = await source.resolve("x", None)  # type: ignore[arg-type]
    return layer, await scan_layer(resolved.layers[0], tmp_path / "tmp")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
async def test_index_whiteouts_and_sizes(tmp_path: Path, compression: str) -> None:
    members = [
        dir_("./etc"),
        file("./etc/hostname", "box\n"),
        sized("/usr/bin/tool", 300_000),
        hard("usr/bin/tool2", "usr/bin/tool"),
        sym("bin", "usr/bin"),
        whiteout("var/cache/old"),
        opaque("opt/app"),
        file("../escape", "x"),
        file("a/../../b", "x"),
    ]
    layer, scan = await scan_file(tmp_path, members, compression)
    assert scan.entries["etc"].kind == "d"
    assert scan.entries["etc/hostname"].size == 4
    assert scan.entries["usr/bin/tool"].size == 300_000
    assert scan.entries["usr/bin/tool2"].kind == "h"
    assert scan.entries["usr/bin/tool2"].link == "usr/bin/tool"
    assert scan.entries["bin"].link == "usr/bin"
    assert scan.whiteouts == ["var/cache/old"]
    assert scan.opaque == ["opt/app"]
    assert not any(".wh." in p for p in scan.entries)
    assert not any("escape" in p or p == "b" for p in scan.entries)
    assert scan.uncompressed == layer.tar_size
    tmp = tmp_path / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []  # nothing extracted, ever


def test_normalise() -> None:
    assert normalise("./etc/os-release") == "etc/os-release"
    assert normalise("//usr//lib/./x/") == "usr/lib/x"
    assert normalise("./") is None
    assert normalise("etc/../../root") is None


async def test_captures_interesting_files_with_caps(tmp_path: Path) -> None:
    big = "ID=huge\n" + "#" * (64 * 1024)
    status = "".join(
        f"Package: p{i}\nStatus: install ok installed\nVersion: 1\n\n" for i in range(5)
    )
    members = [
        file("usr/lib/os-release", OS_RELEASE),
        hard("etc/os-release", "usr/lib/os-release"),
        file("etc/alpine-release", big),  # over the 64 KiB cap: not read
        file("var/lib/dpkg/status", status),
        file("lib/apk/db/installed", "C:x\nP:musl\nV:1\n\nP:busybox\nV:1\n\n"),
        file("var/lib/dpkg/status.d/base", "Package: base-files\nVersion: 12\n"),
        file("var/lib/dpkg/status.d/base.md5sums", "abc  etc/x\n"),
        file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    ]
    _, scan = await scan_file(tmp_path, members)
    assert scan.files["usr/lib/os-release"].value == {
        "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
        "ID": "debian",
        "VERSION_ID": "12",
    }
    # A hard link is indexed as such; facts are read through it at analysis time.
    assert "etc/os-release" not in scan.files
    assert scan.entries["etc/os-release"] == Entry("h", 0, "usr/lib/os-release")
    assert scan.files["etc/alpine-release"].value is None
    assert scan.files["var/lib/dpkg/status"].value == 5
    assert scan.files["lib/apk/db/installed"].value == 2
    assert scan.files["var/lib/dpkg/status.d/base"].value == 1
    assert "var/lib/dpkg/status.d/base.md5sums" not in scan.files
    assert scan.files["etc/passwd"].value == {"root": [0, 0]}


async def test_rpm_db_is_counted_from_a_temp_copy_that_is_removed(tmp_path: Path) -> None:
    db = tmp_path / "rpmdb.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)")
    conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b"x" * 100,)] * 37)
    conn.commit()
    conn.close()
    members = [file("usr/lib/sysimage/rpm/rpmdb.sqlite", db.read_bytes())]
    _, scan = await scan_file(tmp_path, members)
    assert scan.files["usr/lib/sysimage/rpm/rpmdb.sqlite"].value == 37
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_multi_member_gzip(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "b", [file("etc/debian_version", "12.5\n")], "none")
    raw = layer.path.read_bytes()
    half = len(raw) // 2
    layer.path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    layer.compression = "gzip"
    source = DiskSource({"x": DiskImage([layer], config())})
    blob = (await source.resolve("x", None)).layers[0]  # type: ignore[arg-type]
    scan = await scan_layer(blob, tmp_path / "tmp")
    assert scan.files["etc/debian_version"].value == "12.5"
    assert scan.uncompressed == len(raw)


async def test_corrupt_and_truncated_layers_are_content_errors(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "b", [sized("big", 200_000)], "gzip")
    data = layer.path.read_bytes()
    layer.path.write_bytes(data[: len(data) // 2])
    source = DiskSource({"x": DiskImage([layer], config())})
    blob = (await source.resolve("x", None)).layers[0]  # type: ignore[arg-type]
    with pytest.raises(ContentError):
        await scan_layer(blob, tmp_path / "tmp")
    layer.path.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 100)
    with pytest.raises(ContentError):
        await scan_layer(blob, tmp_path / "tmp")
    garbage = LayerBlob("sha256:" + "1" * 64, 10, "none", blob.open)
    layer.path.write_bytes(b"definitely not a tar archive" * 40)
    with pytest.raises(ContentError):
        await scan_layer(garbage, tmp_path / "tmp")


async def test_source_errors_mid_stream_propagate(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "b", [sized("big", 500_000)], "none")
    source = DiskSource({"x": DiskImage([layer], config())})
    source.fail_after[layer.digest] = Unreachable("registry went away")
    blob = (await source.resolve("x", None)).layers[0]  # type: ignore[arg-type]
    with pytest.raises(Unreachable, match="went away"):
        await scan_layer(blob, tmp_path / "tmp")


async def test_scan_round_trips_through_its_cache_form(tmp_path: Path) -> None:
    _, scan = await scan_file(
        tmp_path, [file("etc/os-release", OS_RELEASE), sym("bin", "usr/bin"), whiteout("x")]
    )
    again = LayerScan.from_dict(scan.to_dict())
    assert again == scan
    assert LayerScan.from_dict({**scan.to_dict(), "v": -1}) is None
    assert LayerScan.from_dict({"v": 1}) is None


async def test_compression_is_read_from_the_bytes_not_the_media_type(tmp_path: Path) -> None:
    import bz2
    import lzma

    import zstandard

    plain = write_layer(tmp_path / "b", [file("etc/debian_version", "12.5\n")], "none")
    raw = plain.path.read_bytes()
    cases = [
        ("gzip", raw),  # plain tar labelled gzip
        ("none", gzip.compress(raw)),  # gzip labelled plain tar
        ("gzip", zstandard.ZstdCompressor().compress(raw)),
        ("zstd", gzip.compress(raw)),
        ("gzip", bz2.compress(raw)),
        ("none", lzma.compress(raw)),
    ]
    for index, (label, data) in enumerate(cases):
        plain.path.write_bytes(data)
        source = DiskSource({"x": DiskImage([plain], config())})
        blob = (await source.resolve("x", None)).layers[0]  # type: ignore[arg-type]
        lying = LayerBlob(blob.digest, len(data), label, blob.open)  # type: ignore[arg-type]
        scan = await scan_layer(lying, tmp_path / f"tmp{index}")
        assert scan.files["etc/debian_version"].value == "12.5", (label, data[:4])
        assert scan.uncompressed == len(raw)
