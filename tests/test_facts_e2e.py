"""Issue 11: image facts that hold on real-world shapes, each from a real image built by the
real Docker Engine (classic builder) and explained by the real CLI (``--source docker``).

Recipes live in tests/images/<case>/; trees for FROM scratch cases are written by the
helpers below. Ground truth comes from the tools that own each format (dpkg-query on the
debootstrap tree, rpm for rpm databases) or from the recipe itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from tests.fixtures.rpmdb import ensure_rpm_databases, rpm_qa, write_ndb
from tests.fixtures.services import (
    RECIPES,
    REPO_ROOT,
    DebianBase,
    EngineImage,
    _tree_build,
    docker_build,
    recipe_hash,
    require_services,
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
