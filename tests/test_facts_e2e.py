"""Issue 11: image facts that hold on real-world shapes, each from a real image built by the
real Docker Engine (classic builder) and explained by the real CLI (``--source docker``).

Recipes live in tests/images/<case>/; trees for FROM scratch cases are written by the
helpers below. Ground truth comes from the tools that own each format (dpkg-query on the
debootstrap tree, rpm for rpm databases) or from the recipe itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from tests.fixtures.services import (
    RECIPES,
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
