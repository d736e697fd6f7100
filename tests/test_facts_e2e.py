"""Issue 11: image facts that hold on real-world shapes, each from a real image built by the
real Docker Engine (classic builder) and explained by the real CLI (``--source docker``).

Recipes live in tests/images/<case>/; trees for FROM scratch cases are written by the
helpers below. Ground truth comes from the tools that own each format (dpkg-query on the
debootstrap tree, rpm for rpm databases) or from the recipe itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from tests.fixtures.registry import RegistryServer
from tests.fixtures.rpmdb import ensure_rpm_databases, rpm_qa, write_ndb
from tests.fixtures.services import (
    CACHE,
    RECIPES,
    REPO_ROOT,
    BuildError,
    DebianBase,
    EngineImage,
    _tree_build,
    docker_build,
    ensure_busybox,
    ensure_static_binary,
    recipe_hash,
    require_services,
    run,
)
from tests.test_explain_e2e import dockwise

pytestmark = pytest.mark.services


@pytest.fixture(autouse=True)
def _services() -> None:
    require_services()


def explain(image: EngineImage, tmp_path: Path) -> dict[str, Any]:
    result = dockwise(
        "explain", image.name, "--json", "--source", "docker", cache=tmp_path / "c", insecure=""
    )
    assert result.returncode == 0, result.stderr
    facts: dict[str, Any] = json.loads(result.stdout)
    return facts


def on_debian(client: DockerClient, debian: DebianBase, case: str) -> EngineImage:
    """Build tests/images/<case>/Dockerfile (FROM the debootstrap base)."""
    directory = RECIPES / case
    return docker_build(
        client, f"dockwise-test/{case}:1", directory, recipe_hash(directory, debian.image_id)
    )


def scratch_tree(client: DockerClient, case: str, fill: Any, *inputs: bytes | str) -> EngineImage:
    """Build tests/images/<case>/Dockerfile with ``fill(context)`` writing its files."""
    return _tree_build(client, f"dockwise-test/{case}:1", RECIPES / case, fill, *inputs)


# --------------------------------------------------------------------------- 1 hard links


def test_facts_are_read_through_hard_links(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    image = on_debian(docker_client, debian_base, "hardlinks")
    facts = explain(image, tmp_path)
    truth = debian_base.dpkg_packages()
    assert facts["packages"]["manager"] == "dpkg"
    assert facts["packages"]["count"] == len(truth)
    os_release = (debian_base.rootfs / "usr/lib/os-release").read_text()
    assert 'VERSION_ID="12"' in os_release
    assert facts["os"]["id"] == "debian"
    assert facts["os"]["version_id"] == "12"  # from os-release, not debian_version's 12.x
    assert facts["os"]["pretty_name"] == "Debian GNU/Linux 12 (bookworm)"


def write(root: Path, relative: str, data: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


# --------------------------------------------------------------------------- 2 usrmerge

WOLFI_PACKAGES = ("wolfi-baselayout", "ca-certificates-bundle", "glibc", "busybox", "apk-tools")


def wolfi_tree(root: Path) -> None:
    records = "".join(
        f"C:Q1{i}=\nP:{n}\nV:1.{i}-r0\nA:x86_64\n\n" for i, n in enumerate(WOLFI_PACKAGES)
    )
    write(root, "usr/lib/apk/db/installed", records)
    write(
        root,
        "usr/lib/os-release",
        'ID=wolfi\nNAME="Wolfi"\nPRETTY_NAME="Wolfi"\nVERSION_ID=20230201\n',
    )
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "lib").symlink_to("usr/lib")


def test_apk_database_under_merged_usr(docker_client: DockerClient, tmp_path: Path) -> None:
    image = scratch_tree(
        docker_client, "wolfi", lambda ctx: wolfi_tree(ctx / "rootfs"), "tree-v1", *WOLFI_PACKAGES
    )
    facts = explain(image, tmp_path)
    assert facts["packages"]["manager"] == "apk"
    assert facts["packages"]["count"] == len(WOLFI_PACKAGES) == 5
    assert facts["os"]["id"] == "wolfi"


# --------------------------------------------------------------------------- 3 rpm formats


def test_rpm_berkeley_db(docker_client: DockerClient, tmp_path: Path) -> None:
    dbs = ensure_rpm_databases()
    truth = rpm_qa(dbs.bdb.parent, "bdb_ro")  # rpm itself reads the Berkeley DB copy
    assert len(truth) == 6

    def fill(ctx: Path) -> None:
        root = ctx / "rootfs"
        write(root, "var/lib/rpm/Packages", dbs.bdb.read_bytes())
        write(
            root,
            "etc/os-release",
            'ID="rhel"\nVERSION_ID="8.10"\nPRETTY_NAME="Red Hat Enterprise Linux 8.10 (Ootpa)"\n',
        )

    image = scratch_tree(docker_client, "ubi8", fill, dbs.bdb.read_bytes(), "tree-v1")
    facts = explain(image, tmp_path)
    assert facts["packages"] == {
        "manager": "rpm",
        "count": len(truth),
        "database": "/var/lib/rpm/Packages",
    }
    assert facts["os"]["id"] == "rhel"


def test_rpm_ndb(docker_client: DockerClient, tmp_path: Path) -> None:
    dbs = ensure_rpm_databases()

    def fill(ctx: Path) -> None:
        root = ctx / "rootfs"
        (root / "usr/lib/sysimage/rpm").mkdir(parents=True)
        write_ndb(root / "usr/lib/sysimage/rpm/Packages.db", dbs.blobs)
        (root / "var/lib").mkdir(parents=True)
        (root / "var/lib/rpm").symlink_to("../../usr/lib/sysimage/rpm")
        write(root, "usr/lib/os-release", 'ID="opensuse-leap"\nVERSION_ID="15.6"\n')

    image = scratch_tree(docker_client, "suse", fill, *(b for _, b in dbs.blobs), "tree-v1")
    facts = explain(image, tmp_path)
    assert facts["packages"]["manager"] == "rpm"
    assert facts["packages"]["count"] == len(dbs.names) == 6


# --------------------------------------------------------------------------- 6 USER


def test_user_resolves_through_the_images_passwd(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    image = on_debian(docker_client, debian_base, "toor")
    facts = explain(image, tmp_path)
    assert facts["user"] == "toor:staff2"
    assert (facts["runs_as_root"], facts["uid"], facts["gid"]) == (True, 0, 0)
    assert "runs as root" in facts["text"]
    assert any("runs as root" in line for line in facts["advice"])


# --------------------------------------------------------------------------- 7 secrets


def test_credentials_are_redacted_span_by_span_and_flagged(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    image = on_debian(docker_client, debian_base, "secrets")
    result = dockwise(
        "explain", image.name, "--json", "--source", "docker", cache=tmp_path / "c", insecure=""
    )
    assert result.returncode == 0, result.stderr
    for secret in ("S3cretPassw0rd", "dwFakeWebhookToken0123456", "dwFakeDockerHubToken012345"):
        assert secret not in result.stdout + result.stderr
    facts = json.loads(result.stdout)
    assert facts["env"]["DATABASE_URL"] == "postgres://app:<redacted>@db/app"
    assert facts["env"]["APP_MODE"] == "prod"
    assert facts["labels"]["com.example.ci"] == "pushed with <redacted> by ci"
    created_by = [layer["created_by"] for layer in facts["layers"]]
    assert 'RUN echo "notify <redacted>" > /dev/null' in created_by  # the webhook is the secret
    rules = {(s["where"], s["rule"]) for s in facts["secrets"]}
    assert ("env", "url-userinfo-password") in rules
    assert ("label", "dockerhub-access-token") in rules
    assert ("history", "slack-webhook-url") in rules
    advice = " ".join(facts["advice"])
    assert "ENV DATABASE_URL" in advice
    assert "Label com.example.ci" in advice
    assert "Build step" in advice and "docker history" in advice
    text = dockwise("explain", image.name, "--source", "docker", cache=tmp_path / "c", insecure="")
    assert text.returncode == 0 and "S3cretPassw0rd" not in text.stdout


# --------------------------------------------------------------------------- 8 file names


def test_undecodable_file_names_are_escaped_in_valid_utf8(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    image = on_debian(docker_client, debian_base, "latin1")
    env = {
        **os.environ,
        "DOCKWISE_CACHE_DIR": str(tmp_path / "c"),
        "PYTHONIOENCODING": "utf-8:strict",  # a strict UTF-8 stdout
        "LC_ALL": "C.UTF-8",
    }
    for extra in (["--json"], []):
        result = subprocess.run(
            [sys.executable, "-m", "bot", "explain", image.name, "--source", "docker", *extra],
            capture_output=True,
            cwd=REPO_ROOT,
            env=env,
            timeout=240,
        )
        assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
        out = result.stdout.decode("utf-8")  # strict: raises on any invalid byte
        assert b"\xe9" not in result.stdout
        if not extra:
            assert "/tmp/caf\\xe9.bin" in out
        else:
            facts = json.loads(out)
            assert facts["wasted_bytes"] >= 2 * 1024 * 1024
            assert any("/tmp/caf\\xe9.bin" in line for line in facts["advice"])


# --------------------------------------------------------------------------- 5 user space


def test_busybox_userland_is_not_called_scratch(
    docker_client: DockerClient, tmp_path: Path
) -> None:
    busybox = ensure_busybox()

    def fill(ctx: Path) -> None:
        shutil.copy2(busybox, ctx / "busybox")

    image = scratch_tree(docker_client, "busybox", fill, busybox.read_bytes())
    facts = explain(image, tmp_path)
    assert facts["userspace"] == "busybox"
    assert facts["shell"] is True and facts["os"] is None and facts["packages"] is None
    assert "BusyBox" in facts["text"] and "/bin/sh" in facts["text"]
    # No sentence may contradict a fact: it has a shell and more than one binary's files.
    assert "no OS user space" not in facts["text"]
    assert "statically linked binary" not in facts["text"]
    assert not any("There is no shell" in line for line in facts["advice"])


# --------------------------------------------------------------------------- 17 runtimes


def python_debs() -> list[Path]:
    """Debian's python3.11-minimal .deb and what it needs beyond minbase (downloaded once)."""
    target = CACHE / "python-debs"
    wanted = ("python3.11-minimal", "libpython3.11-minimal", "libexpat1")
    if not all(list(target.glob(f"{name}_*.deb")) for name in wanted):
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o777)  # apt's _apt user downloads into it
        try:
            run(["apt-get", "download", "-qq", *wanted], cwd=target)
        except BuildError:
            run(["apt-get", "update", "-qq"])
            run(["apt-get", "download", "-qq", *wanted], cwd=target)
    return sorted(p for name in wanted for p in target.glob(f"{name}_*.deb"))


def test_python_runtime_from_debians_package(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    debs = python_debs()
    directory = RECIPES / "python"
    with tempfile.TemporaryDirectory(prefix="ctx-", dir=CACHE) as tmp:
        context = Path(tmp) / "ctx"
        shutil.copytree(directory, context)
        (context / "debs").mkdir()
        for deb in debs:
            shutil.copy2(deb, context / "debs" / deb.name)
        recipe = recipe_hash(directory, debian_base.image_id, *(d.name for d in debs))
        image = docker_build(docker_client, "dockwise-test/python:1", context, recipe)
    python_deb = next(d for d in debs if d.name.startswith("python3.11-minimal_"))
    version = run(["dpkg-deb", "-f", str(python_deb), "Version"]).strip()  # 3.11.2-6+deb12u6
    facts = explain(image, tmp_path)
    assert facts["runtimes"] == [
        {"name": "python", "version": "3.11", "path": "/usr/lib/python3.11"}
    ]
    assert version.startswith("3.11.")
    assert facts["userspace"] == "distribution"
    assert "Python 3.11" in facts["text"]


NODE_VERSION_H = """#ifndef SRC_NODE_VERSION_H_
#define SRC_NODE_VERSION_H_

#define NODE_MAJOR_VERSION 20
#define NODE_MINOR_VERSION 11
#define NODE_PATCH_VERSION 1

#define NODE_VERSION_IS_LTS 1
#endif  // SRC_NODE_VERSION_H_
"""
JAVA_RELEASE = (
    'IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="21.0.2"\nJAVA_RUNTIME_VERSION="21.0.2+13-LTS"\n'
)


def test_language_runtimes_without_a_distribution(
    docker_client: DockerClient, tmp_path: Path
) -> None:
    binary = ensure_static_binary()

    def fill(ctx: Path) -> None:
        root = ctx / "rootfs"
        write(root, "usr/local/include/node/node_version.h", NODE_VERSION_H)
        write(root, "usr/local/bin/node", binary.read_bytes())
        write(root, "opt/java/openjdk/release", JAVA_RELEASE)
        write(root, "opt/java/openjdk/bin/java", binary.read_bytes())

    image = scratch_tree(docker_client, "runtimes", fill, NODE_VERSION_H, JAVA_RELEASE, "v1")
    facts = explain(image, tmp_path)
    assert sorted((r["name"], r["version"]) for r in facts["runtimes"]) == [
        ("java", "21.0.2"),
        ("node", "20.11.1"),
    ]
    assert facts["userspace"] == "runtime"
    assert facts["shell"] is False and facts["os"] is None
    assert "no Linux distribution" in facts["text"] and "Node.js 20.11.1" in facts["text"]


# --------------------------------------------------------------------------- 4 chisel

CHISEL_PACKAGES = {
    "base-files": "13ubuntu10",
    "ca-certificates": "20240203",
    "libc6": "2.39-0ubuntu8.3",
    "openssl": "3.0.13-0ubuntu3.4",
}


def chisel_manifest() -> str:
    """A jsonwall as chisel writes it: a header line, then sorted JSON lines."""
    lines = [
        f'{{"kind":"package","name":"{n}","version":"{v}","sha256":"{"0" * 64}","arch":"amd64"}}'
        for n, v in CHISEL_PACKAGES.items()
    ]
    lines += [
        '{"kind":"path","path":"/etc/ssl/certs/ca-certificates.crt","mode":"0644",'
        '"slices":["ca-certificates_data"]}',
        '{"kind":"slice","name":"base-files_base"}',
        '{"kind":"slice","name":"libc6_libs"}',
    ]
    header = f'{{"jsonwall":"1.0","schema":"1.0","count":{len(lines)}}}'
    return "\n".join([header, *sorted(lines)]) + "\n"


def test_chiselled_ubuntu_packages_from_the_manifest(
    docker_client: DockerClient, tmp_path: Path
) -> None:
    manifest = chisel_manifest()

    def fill(ctx: Path) -> None:
        root = ctx / "rootfs"
        write(root, "var/lib/chisel/manifest.wall.json", manifest)
        run(
            [
                "zstd",
                "-q",
                "--rm",
                "-o",
                str(root / "var/lib/chisel/manifest.wall"),
                str(root / "var/lib/chisel/manifest.wall.json"),
            ]
        )
        write(
            root,
            "usr/lib/os-release",
            'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nID=ubuntu\nVERSION_ID="24.04"\n',
        )

    image = scratch_tree(docker_client, "chisel", fill, manifest, "v1")
    facts = explain(image, tmp_path)
    assert facts["packages"] == {
        "manager": "chisel",
        "count": len(CHISEL_PACKAGES),
        "database": "/var/lib/chisel/manifest.wall",
    }
    assert "4 deb packages" in facts["text"] and "no dpkg or apt" in facts["text"]
    assert facts["userspace"] == "distroless"


# --------------------------------------------------------------------------- 11 compression


def test_layer_compression_is_sniffed_and_layer_errors_name_the_layer(
    registry: RegistryServer, tmp_path: Path
) -> None:
    from tests.fixtures.registry import OCI_LAYER_GZIP, OCI_LAYER_TAR, make_layer, push_image

    pusher = registry.pusher()
    release = b'ID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n'
    plain = make_layer({"etc/os-release": release}, compression="none")
    gzipped = make_layer({"etc/motd": b"hello\n"})
    push_image(pusher, "dockwise/plain-as-gzip", "1", [plain], layer_media_type=OCI_LAYER_GZIP)
    push_image(
        pusher, "dockwise/gzip-as-tar", "1", [plain, gzipped], layer_media_type=OCI_LAYER_TAR
    )
    broken = push_image(
        pusher,
        "dockwise/broken-second",
        "1",
        [plain, make_layer({"big": bytes(100_000)}, compression="none")[:50_000]],  # cut short
        layer_media_type=OCI_LAYER_GZIP,
    )
    host = registry.host
    for repo in ("plain-as-gzip", "gzip-as-tar"):
        result = dockwise(
            "explain", f"{host}/dockwise/{repo}:1", "--json", "--source", "registry",
            cache=tmp_path / repo, insecure=host,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        facts = json.loads(result.stdout)
        assert facts["os"]["id"] == "alpine"
    result = dockwise(
        "explain", f"{host}/dockwise/broken-second:1", "--source", "registry",
        cache=tmp_path / "broken", insecure=host,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"layer 2 of 2 ({broken.layer_digests[1]})" in result.stderr
    assert "truncated" in result.stderr and "labelled gzip" in result.stderr


# --------------------------------------------------------------------------- 16 base image


def test_base_image_without_a_label_is_matched_by_layers(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    child = on_debian(docker_client, debian_base, "toor")  # FROM the base, no base label
    cache = tmp_path / "shared"

    def facts_of(name: str) -> dict[str, Any]:
        result = dockwise("explain", name, "--json", "--source", "docker", cache=cache, insecure="")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    before = facts_of(child.name)
    assert before["base_match"] is None and before["base_image"] is None  # nothing seen yet
    base = facts_of(debian_base.name)
    assert base["base_match"] is None  # an image is not its own base
    after = facts_of(child.name)
    match = after["base_match"]
    assert match is not None
    assert match["reference"] == base["reference"]
    assert (match["layers"], match["of"], match["confidence"]) == (1, 2, "high")
    assert "identical to" in after["text"] and "most likely its base image" in after["text"]


# --------------------------------------------------------------------------- 12 whiteouts


def test_thousands_of_directory_whiteouts(
    docker_client: DockerClient, debian_base: DebianBase, tmp_path: Path
) -> None:
    """The speed figure is bench/whiteouts_bench.py's; this checks the result on a real
    image: every deleted .pyc counts as wasted, the kept __init__.py files do not."""
    dirs, files, size = 3000, 4, 100  # as in tests/images/pycache/Dockerfile
    image = on_debian(docker_client, debian_base, "pycache")
    facts = explain(image, tmp_path)
    assert facts["wasted_bytes"] == dirs * files * size
    filesystem = [layer for layer in facts["layers"] if not layer["empty"]]
    assert len(filesystem) == 3
