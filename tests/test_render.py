"""ImageFacts -> JSON shape, plain-language text, advice and the chat Reply."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bot.image.facts import ImageFacts, LayerFact, OsInfo, PackageInfo, SizeInfo, Waste
from bot.image.render import finish, render
from bot.reply import ReplyKind

KNOWLEDGE = Path(__file__).resolve().parent.parent / "knowledge"
JSON_KEYS = {
    "reference", "source", "digest", "platform", "platforms", "created", "os", "scratch",
    "packages", "shell", "user", "runs_as_root", "uid", "gid", "entrypoint", "cmd", "workdir",
    "exposed_ports", "env", "labels", "base_image", "layers", "size", "wasted_bytes", "secrets",
    "runtimes", "userspace", "base_match",
    "advice", "text",
}  # fmt: skip
DEBIAN = OsInfo("debian", "12", "Debian GNU/Linux 12 (bookworm)")


def make(**changes: Any) -> ImageFacts:
    facts = ImageFacts(
        reference="docker.io/library/python:3.12-slim",
        source="registry",
        digest="sha256:" + "a" * 64,
        platform="linux/amd64",
        platforms=["linux/amd64", "linux/arm64"],
        created="2026-01-01T00:00:00Z",
        os=DEBIAN,
        scratch=False,
        packages=PackageInfo("dpkg", 90),
        shell=True,
        user="",
        runs_as_root=True,
        entrypoint=None,
        cmd=["python3"],
        workdir="",
        exposed_ports=[],
        env={"PATH": "/usr/bin"},
        labels={},
        base_image=None,
        layers=[
            LayerFact("sha256:" + "1" * 64, 80_000_000, "ADD file:123 in /", False),
            LayerFact(None, 0, 'CMD ["python3"]', True),
        ],
        size=SizeInfo(30_000_000, 80_000_000),
        wasted_bytes=0,
        shell_path="/bin/sh",
    )
    return finish(dataclasses.replace(facts, **changes))


def test_json_has_exactly_the_documented_keys() -> None:
    data = make().to_json()
    assert set(data) == JSON_KEYS
    assert data["os"] == {"id": "debian", "version_id": "12", "pretty_name": DEBIAN.pretty_name}
    assert data["packages"] == {"manager": "dpkg", "count": 90, "database": None}
    assert data["size"] == {"compressed": 30_000_000, "uncompressed": 80_000_000}
    assert set(data["layers"][0]) == {"digest", "size", "created_by", "empty"}


def test_debian_reply() -> None:
    reply = render(make())
    assert reply.kind == ReplyKind.IMAGE
    assert reply.title == "python:3.12-slim: Debian GNU/Linux 12 user space"
    assert "Debian GNU/Linux 12's user space" in reply.body
    assert "host's kernel" in reply.body
    assert reply.data == make().to_json()
    names = [f.name for f in reply.facts]
    assert names == [
        "OS", "Packages", "Shell", "User", "Size", "Layers", "Wasted", "Platforms", "Base image",
    ]  # fmt: skip
    assert [s.title for s in reply.sections] == ["Layers", "Advice"]
    assert "runs as root" in reply.sections[1].body.lower()
    for article in reply.related:
        assert (KNOWLEDGE / f"{article}.md").is_file(), article
    assert "kernel-sharing" in reply.related and "root-and-isolation" in reply.related
    assert all(s.url.startswith("https://docs.docker.com/") for s in reply.sources)


def test_scratch_reply() -> None:
    facts = make(
        reference="example.test/static:1",
        os=None,
        packages=None,
        scratch=True,
        shell=False,
        shell_path=None,
        user="65532",
        runs_as_root=False,
    )
    reply = render(facts)
    assert reply.title == "example.test/static:1: no OS user space (scratch)"
    assert "no OS user space at all" in reply.body and "host kernel" in reply.body
    assert "from-scratch" in reply.related
    advice = reply.sections[-1].body
    assert "docker debug" in advice and "root" not in advice


def test_full_debian_gets_slim_advice_but_slim_does_not() -> None:
    full = make(reference="docker.io/library/python:3.12", packages=PackageInfo("dpkg", 430))
    assert any("-slim" in a for a in full.advice)
    slim = make(packages=PackageInfo("dpkg", 430))
    assert not any("-slim" in a for a in slim.advice)


def test_wasted_space_advice_names_size_and_instructions() -> None:
    facts = make(
        layers=[
            LayerFact("sha256:" + "1" * 64, 1000, "ADD file:1 in /", False),
            LayerFact("sha256:" + "2" * 64, 9_000_000, "RUN head -c 8M /dev/urandom > /x", False),
            LayerFact("sha256:" + "3" * 64, 100, "RUN rm /x", False),
        ],
        wasted_bytes=8_388_608,
        waste=[Waste("x", 8_388_608, (1, 2))],
    )
    advice = " ".join(facts.advice)
    assert "8.4 MB is wasted" in advice
    assert "RUN head -c 8M" in advice and "RUN rm /x" in advice


def test_alpine_and_long_layer_lines() -> None:
    long_run = "RUN " + "apk add --no-cache something-long " * 20
    facts = make(
        reference="docker.io/library/alpine:3.20",
        os=OsInfo("alpine", "3.20.3", "Alpine Linux v3.20"),
        packages=PackageInfo("apk", 15),
        layers=[LayerFact("sha256:" + "1" * 64, 8_000_000, long_run, False)],
    )
    reply = render(facts)
    assert reply.title == "alpine:3.20: Alpine Linux v3.20 user space"
    assert "musl" in reply.body and "musl-vs-glibc" in reply.related
    assert any("musl" in a for a in facts.advice)
    line = reply.sections[0].body.splitlines()[0]
    assert line.endswith("...") and len(line) <= 120 + len("- `8.0 MB` ")
