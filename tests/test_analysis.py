"""Explainer.facts over real layer tarballs: the recipes below are the ground truth."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import Settings
from bot.errors import ImageNotFound, InvalidReference
from bot.image.explain import Explainer
from bot.image.reference import parse_reference
from bot.image.source import Platform
from tests.fixtures.image_layers import (
    DiskImage,
    DiskSource,
    Layer,
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

MIB = 1024 * 1024
DEBIAN_OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    'VERSION_ID="12"\nID=debian\n'
)
DEBIAN_PACKAGES = 7
SECRET = "dwtest-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
GH_TOKEN = "ghp_" + "Zy9Xw8Vu7T" * 4


def ref(text: str) -> str:
    return str(parse_reference(text))


def dpkg_status(installed: int, removed: int = 2) -> str:
    rows = [f"Package: p{i}\nStatus: install ok installed\nVersion: 1\n" for i in range(installed)]
    rows += [
        f"Package: r{i}\nStatus: deinstall ok config-files\nVersion: 1\n" for i in range(removed)
    ]
    return "\n".join(rows)


def debian_base(blobs: Path) -> Layer:
    return write_layer(
        blobs,
        [
            dir_("./usr"),
            file("./usr/lib/os-release", DEBIAN_OS_RELEASE),
            sym("./etc/os-release", "../usr/lib/os-release"),
            sym("./bin", "usr/bin"),
            file("./usr/bin/dash", b"\x7fELF dash"),
            sym("./usr/bin/sh", "dash"),
            file("./var/lib/dpkg/status", dpkg_status(DEBIAN_PACKAGES)),
            sized("./etc/motd", 1000),
            file("./etc/debian_version", "12.5\n"),
        ],
    )


def explainer(tmp_path: Path, **sources: DiskSource) -> Explainer:
    settings = Settings(cache_dir=tmp_path / "cache")
    return Explainer(settings, sources=sources)


async def test_full_debian_image(tmp_path: Path) -> None:
    base = debian_base(tmp_path / "blobs")
    history = [("ADD rootfs.tar /", False), ('CMD ["bash"]', True)]
    image = DiskImage([base], config(history, cmd=["bash"]))
    source = DiskSource({ref("debian:12"): image})
    facts = await explainer(tmp_path, registry=source).facts("debian:12", source="registry")
    assert facts.reference == "docker.io/library/debian:12"
    assert facts.os is not None
    assert (facts.os.id, facts.os.version_id) == ("debian", "12")
    assert facts.packages is not None
    assert (facts.packages.manager, facts.packages.count) == ("dpkg", DEBIAN_PACKAGES)
    assert facts.shell and facts.shell_path == "/bin/sh"
    assert facts.scratch is False
    assert facts.runs_as_root and facts.user == ""
    assert facts.cmd == ["bash"]
    assert [(layer.digest, layer.empty) for layer in facts.layers] == [
        (base.digest, False),
        (None, True),
    ]
    assert facts.layers[0].size == base.tar_size
    assert facts.size.compressed == base.size
    assert facts.size.uncompressed == base.tar_size
    assert facts.wasted_bytes == 0
    assert "Debian GNU/Linux 12" in facts.text and "host's kernel" in facts.text


async def test_app_image_on_debian(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blobs = tmp_path / "blobs"
    base = debian_base(blobs)
    waste_file = 3 * MIB
    build_dir = {"opt/build/a.o": 100_000, "opt/build/b.o": 50_000}
    layers = [
        base,
        write_layer(blobs, [file("etc/passwd", "app:x:1000:1000::/home/app:/bin/sh\n")]),
        write_layer(blobs, [sized("var/tmp/cache.bin", waste_file)]),
        write_layer(blobs, [whiteout("var/tmp/cache.bin")]),
        write_layer(blobs, [sized("etc/motd", 2000, seed=2)]),  # rewrites the base's 1000
        write_layer(blobs, [sized(p, n) for p, n in build_dir.items()]),
        write_layer(blobs, [whiteout("opt/build")]),
        write_layer(blobs, [file("usr/local/bin/app", "#!/bin/sh\necho hi\n")]),
    ]
    history = [
        ("/bin/sh -c #(nop) ADD file:abc in / ", False),
        ("RUN /bin/sh -c useradd app # buildkit", False),
        ("|1 API_TOKEN=" + SECRET + " /bin/sh -c head -c 3145728 /dev/urandom > x", False),
        ("/bin/sh -c rm /var/tmp/cache.bin", False),
        ("COPY motd /etc/motd # buildkit", False),
        ("RUN /bin/sh -c apt-get install -y gcc make && make # buildkit", False),
        ("RUN /bin/sh -c rm -rf /opt/build # buildkit", False),
        ("COPY app /usr/local/bin/app # buildkit", False),
        (f"ENV API_TOKEN={SECRET} APP_GREETING=hello", True),
        ("EXPOSE map[8080/tcp:{}]", True),
        ("USER app", True),
    ]
    cfg = config(
        history,
        user="app",
        env=[
            "PATH=/usr/local/bin:/usr/bin",
            f"API_TOKEN={SECRET}",
            f"HARMLESS_LOOKING={GH_TOKEN}",
            "KEYBOARD=us",
            "APP_GREETING=hello",
        ],
        entrypoint=["/usr/local/bin/app"],
        cmd=["--port", "8080"],
        workdir="/home/app",
        ports=["8080/tcp", "53/udp", "9090"],
        labels={
            "org.opencontainers.image.base.name": "docker.io/library/debian:12",
            "com.example.deploy-token": "label-secret-4242",
            "org.opencontainers.image.authors": "dockwise",
        },
    )
    source = DiskSource({ref("example.test/app:1"): DiskImage(layers, cfg)})
    caplog.set_level(logging.DEBUG)
    exp = explainer(tmp_path, registry=source)
    facts = await exp.facts("example.test/app:1", source="registry")
    reply = await exp.explain("example.test/app:1", source="registry")

    # dive: all occurrences of a repeated path count (deleted file, rewritten motd, and the
    # files hidden by the directory whiteout).
    assert facts.wasted_bytes == waste_file + 1000 + 2000 + sum(build_dir.values())
    assert facts.user == "app" and facts.runs_as_root is False
    assert facts.exposed_ports == ["53/udp", "8080/tcp", "9090/tcp"]
    assert facts.entrypoint == ["/usr/local/bin/app"] and facts.workdir == "/home/app"
    assert facts.base_image == "docker.io/library/debian:12"
    assert facts.labels["com.example.deploy-token"] == "<redacted>"
    assert facts.labels["org.opencontainers.image.authors"] == "dockwise"
    assert facts.env["API_TOKEN"] == "<redacted>"
    assert facts.env["HARMLESS_LOOKING"] == "<redacted>"
    assert facts.env["KEYBOARD"] == "us" and facts.env["APP_GREETING"] == "hello"
    assert sorted(facts.secret_env) == ["API_TOKEN", "HARMLESS_LOOKING"]
    assert facts.size.uncompressed == sum(layer.tar_size for layer in layers)
    assert facts.size.compressed == sum(layer.size for layer in layers)
    non_empty = [layer for layer in facts.layers if not layer.empty]
    assert [layer.digest for layer in non_empty] == [layer.digest for layer in layers]
    assert facts.layers[0].created_by == "ADD file:abc in /"
    assert facts.layers[3].created_by == "RUN rm /var/tmp/cache.bin"
    assert facts.layers[5].created_by.startswith("RUN apt-get install -y gcc make")
    assert facts.os is not None and facts.os.id == "debian"

    everything = json.dumps(facts.to_json()) + json.dumps(reply.to_dict()) + caplog.text
    everything += reply.plain_text()
    assert SECRET not in everything and GH_TOKEN not in everything
    assert "label-secret-4242" not in everything
    advice = " ".join(facts.advice)
    assert "API_TOKEN" in advice and "HARMLESS_LOOKING" in advice
    assert "multi-stage" in advice and "gcc" in advice
    assert "3." in advice and "wasted" in advice and "var/tmp/cache.bin" in advice
    assert "runs as root" not in advice


async def test_scratch_static_binary(tmp_path: Path) -> None:
    layer = write_layer(tmp_path / "b", [sized("app", MIB)])
    image = DiskImage([layer], config([("COPY app /app", False)], entrypoint=["/app"]))
    source = DiskSource({ref("example.test/static:1"): image})
    facts = await explainer(tmp_path, registry=source).facts("example.test/static:1")
    assert facts.scratch is True
    assert facts.os is None and facts.packages is None and facts.shell is False
    assert "no OS user space" in facts.text
    assert any("docker debug" in a for a in facts.advice)


async def test_distroless_like(tmp_path: Path) -> None:
    packages = ["base-files", "libc6", "netbase"]
    layer = write_layer(
        tmp_path / "b",
        [
            file("etc/os-release", 'PRETTY_NAME="Distroless"\nID=debian\nVERSION_ID="12"\n'),
            *[file(f"var/lib/dpkg/status.d/{p}", f"Package: {p}\nVersion: 1\n") for p in packages],
            *[file(f"var/lib/dpkg/status.d/{p}.md5sums", "x  y\n") for p in packages],
            file("etc/passwd", "nonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n"),
        ],
    )
    image = DiskImage([layer], config([("bazel build", False)], user="65532"))
    source = DiskSource({ref("gcr.io/distroless/base:nonroot"): image})
    facts = await explainer(tmp_path, registry=source).facts("gcr.io/distroless/base:nonroot")
    assert facts.packages is not None
    assert (facts.packages.manager, facts.packages.count) == ("dpkg", len(packages))
    assert facts.shell is False and facts.runs_as_root is False
    assert facts.os is not None and facts.os.pretty_name == "Distroless"
    assert "no shell" in facts.text


async def test_dangling_shell_symlink_is_not_a_shell(tmp_path: Path) -> None:
    blobs = tmp_path / "b"
    lower = write_layer(
        blobs,
        [sym("bin", "usr/bin"), sym("usr/bin/sh", "/bin/dash"), file("etc/debian_version", "12")],
    )
    image = DiskImage([lower], config())
    upper = write_layer(blobs, [file("usr/bin/bash", b"\x7fELF bash")])
    image2 = DiskImage([lower, upper], config())
    source = DiskSource({ref("x.test/a:1"): image, ref("x.test/b:1"): image2})
    exp = explainer(tmp_path, registry=source)
    assert (await exp.facts("x.test/a:1")).shell is False
    with_bash = await exp.facts("x.test/b:1")
    assert with_bash.shell is True and with_bash.shell_path == "/bin/bash"


async def test_alpine(tmp_path: Path) -> None:
    apk = ["musl", "busybox", "apk-tools"]
    layer = write_layer(
        tmp_path / "b",
        [
            file("etc/alpine-release", "3.20.3\n"),
            file("lib/apk/db/installed", "".join(f"C:Q1=\nP:{p}\nV:1\n\n" for p in apk)),
            file("bin/busybox", b"\x7fELF busybox"),
            sym("bin/sh", "/bin/busybox"),
        ],
    )
    source = DiskSource({ref("alpine:3.20"): DiskImage([layer], config())})
    facts = await explainer(tmp_path, registry=source).facts("alpine:3.20")
    assert facts.os is not None and (facts.os.id, facts.os.version_id) == ("alpine", "3.20.3")
    assert facts.packages is not None and facts.packages.count == len(apk)
    assert facts.shell is True
    assert any("musl" in a for a in facts.advice)


async def test_opaque_dir_and_whiteouts_hide_lower_files(tmp_path: Path) -> None:
    blobs = tmp_path / "b"
    base = debian_base(blobs)
    upper = write_layer(
        blobs, [opaque("usr/lib"), file("usr/lib/other", "x"), whiteout("var/lib/dpkg/status")]
    )
    source = DiskSource({ref("x.test/o:1"): DiskImage([base, upper], config())})
    facts = await explainer(tmp_path, registry=source).facts("x.test/o:1")
    # os-release is hidden by the opaque usr/lib: the fallback is etc/debian_version.
    assert facts.os is not None
    assert (facts.os.id, facts.os.version_id, facts.os.pretty_name) == (
        "debian",
        "12.5",
        "Debian GNU/Linux 12.5",
    )
    assert facts.packages is None and facts.scratch is False


async def test_rpm_image(tmp_path: Path) -> None:
    db = tmp_path / "rpmdb.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB)")
    conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(b"h",)] * 25)
    conn.commit()
    conn.close()
    layer = write_layer(
        tmp_path / "b",
        [
            file("usr/lib/os-release", 'ID=fedora\nVERSION_ID=40\nPRETTY_NAME="Fedora Linux 40"\n'),
            sym("etc/os-release", "../usr/lib/os-release"),
            file("usr/lib/sysimage/rpm/rpmdb.sqlite", db.read_bytes()),
            file("usr/bin/bash", b"bash"),
            sym("bin", "usr/bin"),
        ],
    )
    source = DiskSource({ref("fedora:40"): DiskImage([layer], config())})
    facts = await explainer(tmp_path, registry=source).facts("fedora:40")
    assert facts.packages is not None
    assert (facts.packages.manager, facts.packages.count) == ("rpm", 25)
    assert facts.os is not None and facts.os.id == "fedora"
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


async def test_multi_platform_index(tmp_path: Path) -> None:
    layer = debian_base(tmp_path / "b")
    image = DiskImage(
        [layer],
        config(architecture="arm64"),
        platforms=[Platform("linux", "amd64"), Platform("linux", "arm64", "v8")],
    )
    source = DiskSource({ref("x.test/multi:1"): image})
    facts = await explainer(tmp_path, registry=source).facts(
        "x.test/multi:1", platform=Platform("linux", "arm64")
    )
    assert facts.platforms == ["linux/amd64", "linux/arm64/v8"]
    assert facts.platform == "linux/arm64"


async def test_auto_prefers_the_engine_and_falls_back(tmp_path: Path) -> None:
    layer = debian_base(tmp_path / "b")
    engine = DiskSource({ref("local-only:1"): DiskImage([layer], config())}, name="docker")
    registry = DiskSource({ref("remote:1"): DiskImage([layer], config())})
    exp = explainer(tmp_path, docker=engine, registry=registry)
    assert (await exp.facts("local-only:1")).source == "docker"
    assert (await exp.facts("remote:1")).source == "registry"
    with pytest.raises(ImageNotFound):
        await exp.facts("missing:1", source="docker")
    with pytest.raises(ImageNotFound):
        await exp.facts("missing:1")
    with pytest.raises(InvalidReference):
        await exp.facts("Not/A:Ref!!")


async def test_facts_through_hard_links_across_layers_and_symlinked_dirs(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    base = write_layer(
        blobs,
        [
            file("usr/lib/os-release", DEBIAN_OS_RELEASE),
            # A file no detector wants by name; its content says os-release.
            file("srv/keep/osr", 'ID=fedora\nVERSION_ID=40\nPRETTY_NAME="Fedora Linux 40"\n'),
            sym("var/lib/dpkg", "../../srv/dpkg"),  # a relative symlinked directory
            file("srv/dpkg/status", dpkg_status(DEBIAN_PACKAGES)),
            sym("srv/alias", "/srv/keep"),
        ],
    )
    top = write_layer(
        blobs,
        [
            # A hard link to a file of an earlier layer, named through a symlinked dir.
            hard("etc/os-release", "srv/alias/osr"),
            file("srv/keep/osr", "ID=rewritten\n"),  # later rewrite: the link keeps the old bytes
        ],
    )
    source = DiskSource({ref("example.test/links:1"): DiskImage([base, top], config())})
    facts = await explainer(tmp_path, registry=source).facts("example.test/links:1")
    assert facts.os is not None and (facts.os.id, facts.os.version_id) == ("fedora", "40")
    assert facts.packages is not None
    assert (facts.packages.manager, facts.packages.count) == ("dpkg", DEBIAN_PACKAGES)


def test_resolve_user_uses_the_images_own_passwd_and_group() -> None:
    from bot.image.analysis import resolve_user

    passwd = {"root": [0, 0], "toor": [0, 0], "app": [1000, 1000]}
    groups = {"root": 0, "app": 1000, "docker": 999}
    assert resolve_user("", passwd, groups) == (0, 0, True)
    assert resolve_user("toor", passwd, groups) == (0, 0, True)
    assert resolve_user("app", passwd, groups) == (1000, 1000, True)
    assert resolve_user("app:docker", passwd, groups) == (1000, 999, True)
    assert resolve_user("0:1000", passwd, groups) == (0, 1000, True)
    assert resolve_user("1000", passwd, groups) == (1000, 1000, True)
    assert resolve_user("4242", passwd, groups) == (4242, 0, True)  # numeric: no entry needed
    assert resolve_user("ghost", passwd, groups) == (None, None, False)
    assert resolve_user("app:nogroup", passwd, groups)[2] is False


class NaiveTree:
    """The overlay rules written the obvious (quadratic) way: the model for Tree."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, str]] = {}
        self.dirs: set[str] = set()

    def is_dir(self, path: str) -> bool:
        found = self.entries.get(path)
        return (found is not None and found[1] == "d") or (found is None and path in self.dirs)

    def hide_under(self, path: str) -> None:
        prefix = path + "/" if path else ""
        self.entries = {p: v for p, v in self.entries.items() if not p.startswith(prefix)}
        self.dirs = {d for d in self.dirs if not d.startswith(prefix)}

    def apply(self, index: int, scan: Any) -> None:
        for path in scan.opaque:
            self.hide_under(path)
        for path in scan.whiteouts:
            if self.is_dir(path):
                self.hide_under(path)
            self.entries.pop(path, None)
            self.dirs.discard(path)
        for path, entry in scan.entries.items():
            if entry.kind != "d" and self.is_dir(path):
                self.hide_under(path)
            self.entries[path] = (index, entry.kind)
            parent = path.rpartition("/")[0]
            while parent and parent not in self.dirs:  # implied parents, as Tree does
                self.dirs.add(parent)
                parent = parent.rpartition("/")[0]
            if entry.kind == "d":
                self.dirs.add(path)


_NAMES = st.sampled_from(["a", "b", "a/b", "a/c", "a/b/c", "ab", "a-b", "a/b0", "b/a", "a.b"])


@st.composite
def _layer(draw: st.DrawFn) -> Any:
    from bot.image.layers import Entry, LayerScan

    scan = LayerScan("sha256:x")
    for name in draw(st.lists(_NAMES, max_size=6)):
        scan.entries[name] = Entry(draw(st.sampled_from(["f", "d"])))
    scan.whiteouts = draw(st.lists(_NAMES, max_size=3))
    scan.opaque = draw(st.lists(_NAMES, max_size=2))
    return scan


@settings(max_examples=300, deadline=None)
@given(st.lists(_layer(), min_size=1, max_size=5))
def test_sorted_tree_stacks_like_the_obvious_model(scans: list[Any]) -> None:
    from bot.image.analysis import Tree

    tree, model = Tree(), NaiveTree()
    for index, scan in enumerate(scans):
        tree.apply(index, scan)
        model.apply(index, scan)
        assert {p: (i, e.kind) for p, (i, e) in tree.entries.items()} == model.entries
        assert tree.dirs == model.dirs
        for name in ["", "a", "a/b", "b"]:
            assert sorted(tree.files_under(name)) == sorted(
                p
                for p, (_, kind) in model.entries.items()
                if kind != "d" and (not name or p.startswith(name + "/"))
            )


async def test_official_python_shape_and_a_shell_without_a_distribution(tmp_path: Path) -> None:
    layer = write_layer(
        tmp_path / "b",
        [
            file("usr/local/lib/python3.12/os.py", "# the standard library\n"),
            file("usr/local/bin/python3.12", b"\x7fELF python"),
            file("bin/sh", b"\x7fELF a static shell"),
        ],
    )
    env = ["PYTHON_VERSION=3.12.7", "PATH=/usr/local/bin:/bin"]
    source = DiskSource({ref("example.test/py:1"): DiskImage([layer], config(env=env))})
    facts = await explainer(tmp_path, registry=source).facts("example.test/py:1")
    assert [(r.name, r.version, r.path) for r in facts.runtimes] == [
        ("python", "3.12.7", "/usr/local/lib/python3.12")  # patch level from the official ENV
    ]
    assert facts.userspace == "runtime" and facts.shell
    assert "with a shell at /bin/sh" in facts.text and "no shell" not in facts.text
    lying = DiskImage([layer], config(env=["PYTHON_VERSION=3.11.9"]))  # ENV disagrees: files win
    source = DiskSource({ref("example.test/py:2"): lying})
    facts = await explainer(tmp_path, registry=source).facts("example.test/py:2")
    assert [(r.name, r.version) for r in facts.runtimes] == [("python", "3.12")]
