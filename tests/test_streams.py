"""bot.image.streams.Forward: the forward-only seekable reader the layer reader and the
engine source walk tar streams with (real tar archives built with tarfile)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest

from bot.image.streams import Forward


def chunked(data: bytes, size: int) -> Callable[[int], bytes]:
    """A pull(n) that hands out ``data`` in pieces of at most ``size`` bytes (a socket)."""
    stream = io.BytesIO(data)

    def pull(n: int) -> bytes:
        return stream.read(min(n, size))

    return pull


def archive(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_reads_span_chunks_and_seeks_skip_forward() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes
    stream = Forward(chunked(data, 1000), chunk=700)
    assert stream.read(10) == data[:10]
    assert stream.read(1500) == data[10:1510]  # across several chunks
    assert stream.tell() == 1510
    assert stream.seek(5000) == 5000
    piece = stream.read1(10_000)  # what the current chunk holds, no more
    assert 0 < len(piece) <= 700 and piece == data[5000 : 5000 + len(piece)]
    at = 5000 + len(piece) + 10
    assert stream.seek(10, io.SEEK_CUR) == at
    assert stream.read(3) == data[at : at + 3]
    assert stream.read() == data[at + 3 :]
    assert stream.read(1) == b"" and stream.read1() == b""


def test_backward_and_end_relative_seeks_are_refused() -> None:
    stream = Forward(chunked(b"x" * 100, 30))
    stream.read(50)
    with pytest.raises(io.UnsupportedOperation, match="backwards"):
        stream.seek(10)
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(0, io.SEEK_END)
    assert stream.read(10) == b"x" * 10  # a refused seek moved nothing


def test_a_seek_past_the_end_stops_there() -> None:
    stream = Forward(chunked(b"abc" * 10, 7))
    assert stream.seek(1000) == 30
    assert stream.read(1) == b""


def test_tarfile_walks_a_stream_through_it_and_skips_unread_data() -> None:
    members = {f"dir/file{i}": bytes([i]) * (i * 3000) for i in range(12)}
    stream = Forward(chunked(archive(members), 4096), chunk=8192)
    seen: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r:") as tar:
        for member in tar:
            if member.name.endswith(("3", "7")):  # read some, skip the rest
                handle = tar.extractfile(member)
                assert handle is not None
                seen[member.name] = handle.read()
            else:
                seen[member.name] = b""
    assert sorted(seen) == sorted(members)
    assert seen["dir/file3"] == members["dir/file3"]
    assert seen["dir/file7"] == members["dir/file7"]


def test_a_member_longer_than_the_stream_is_an_unexpected_end() -> None:
    data = archive({"big": b"z" * 50_000, "after": b"1"})
    stream = Forward(chunked(data[:20_000], 4096))
    with (
        pytest.raises(tarfile.ReadError, match="unexpected end"),
        tarfile.open(fileobj=stream, mode="r:") as tar,
    ):
        list(tar)
