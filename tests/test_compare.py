"""`dockwise compare A B` against two real images built by the real engine, checked against
ground truth that does not come from dockwise:

- packages: each image's /var/lib/dpkg/status copied out of a container (``docker cp``'s
  archive API) and read by ``dpkg-query --admindir``;
- shared layers: the diff_ids of ``docker image inspect``; shared bytes: the layer tar sizes
  in ``docker save``'s archive;
- downloads: a counting proxy in front of the registry.

Images (tests/images/compare/): A = the debootstrap Debian + a marker package 1.0; B = A with
six packages purged, the apt lists removed and the marker upgraded to 2.0.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from bot.config import Settings
from bot.engine import Engine
from bot.image.explain import Explainer
from bot.knowledge import KnowledgeBase
from bot.reply import ReplyKind
from tests.fixtures.services import (
    REPO_ROOT,
    CountingProxy,
    EngineImage,
    ImageSet,
    PushedImages,
    cache_lock,
    docker_build,
    recipe_hash,
    require_services,
    run,
    skopeo_inspect,
    skopeo_push,
)

pytestmark = pytest.mark.services
RECIPE = REPO_ROOT / "tests" / "images" / "compare"
PURGED = ("e2fsprogs", "logsave", "libext2fs2", "libss2", "tzdata", "util-linux-extra")


@pytest.fixture(autouse=True)
def _services() -> None:
    require_services()


@dataclass(frozen=True)
class ComparePair:
    a: EngineImage
    b: EngineImage
    pushed_a: str
    pushed_b: str
    registry_host: str


@pytest.fixture(scope="module")
def pair(
    docker_client: DockerClient, test_images: ImageSet, pushed_images: PushedImages
) -> ComparePair:
    with cache_lock():
        a = docker_build(
            docker_client,
            "dockwise-test/cmp-a:1",
            RECIPE,
            recipe_hash(RECIPE, test_images.debian.image_id, "a"),
            dockerfile="Dockerfile.a",
        )
        b = docker_build(
            docker_client,
            "dockwise-test/cmp-b:1",
            RECIPE,
            recipe_hash(RECIPE, a.image_id, "b"),
            dockerfile="Dockerfile.b",
            build_args={"BASE": a.name, "PURGE": " ".join(PURGED)},
        )
    host = pushed_images.registry.host
    refs = []
    for image in (a, b):
        destination = f"{host}/dockwise/{image.name.split('/')[1].replace(':', '-')}:1"
        skopeo_push(image.name, destination)
        refs.append(destination)
    return ComparePair(a, b, refs[0], refs[1], host)


# --------------------------------------------------------------------------- ground truth


def dpkg_truth(client: DockerClient, image: str) -> dict[str, tuple[str, int]]:
    """binary:Package -> (version, installed size in bytes), from dpkg-query itself."""
    container = client.containers.create(image, command=["true"])
    try:
        stream, _stat = container.get_archive("/var/lib/dpkg/status")
        data = b"".join(stream)
    finally:
        container.remove(force=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            member = tf.extractfile("status")
            assert member is not None
            (Path(tmp) / "status").write_bytes(member.read())
        out = run(
            [
                "dpkg-query",
                f"--admindir={tmp}",
                "-W",
                "-f=${binary:Package}\t${Version}\t${Installed-Size}\t${db:Status-Abbrev}\n",
            ]
        )
    truth = {}
    for line in out.splitlines():
        name, version, size, status = line.split("\t")
        if status.startswith("ii"):
            truth[name] = (version, int(size) * 1024)
    return truth


def layer_tar_sizes(client: DockerClient, image: str) -> dict[str, int]:
    """diff_id -> size of the layer tar in ``docker save``'s archive."""
    diff_ids = client.images.get(image).attrs["RootFS"]["Layers"]
    with tempfile.TemporaryFile() as spool:
        for chunk in client.api.get_image(image):
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool) as tf:
            manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
            paths = manifest[0]["Layers"]
            return {d: tf.getmember(p).size for d, p in zip(diff_ids, paths, strict=True)}


def compare_cli(*args: str, cache: Path, insecure: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKWISE_CACHE_DIR": str(cache), "DOCKWISE_INSECURE_REGISTRIES": insecure}
    return subprocess.run(
        [sys.executable, "-m", "bot", "compare", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def docker_comparison(pair: ComparePair, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache = tmp_path_factory.mktemp("cmp-docker")
    result = compare_cli("--json", "--source", "docker", pair.a.name, pair.b.name, cache=cache)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- tests


def test_json_shape(docker_comparison: dict[str, Any]) -> None:
    assert set(docker_comparison) == {"a", "b", "shared_layers", "shared_bytes", "packages"}
    assert set(docker_comparison["packages"]) == {"only_a", "only_b", "changed"}
    assert docker_comparison["a"]["reference"].endswith("dockwise-test/cmp-a:1")
    assert docker_comparison["b"]["reference"].endswith("dockwise-test/cmp-b:1")


def test_package_diff_matches_dpkg_query(
    docker_comparison: dict[str, Any], pair: ComparePair, docker_client: DockerClient
) -> None:
    truth_a = dpkg_truth(docker_client, pair.a.name)
    truth_b = dpkg_truth(docker_client, pair.b.name)
    packages = docker_comparison["packages"]
    only_a = {p["name"]: (p["version"], p["size"]) for p in packages["only_a"]}
    only_b = {p["name"]: (p["version"], p["size"]) for p in packages["only_b"]}
    assert only_a == {n: truth_a[n] for n in truth_a.keys() - truth_b.keys()}
    assert only_b == {n: truth_b[n] for n in truth_b.keys() - truth_a.keys()}
    assert {n.split(":")[0] for n in only_a} == set(PURGED)
    changed = {p["name"]: (p["a"], p["b"]) for p in packages["changed"]}
    expected = {
        n: (truth_a[n][0], truth_b[n][0])
        for n in truth_a.keys() & truth_b.keys()
        if truth_a[n][0] != truth_b[n][0]
    }
    assert changed == expected == {"dockwise-marker": ("1.0", "2.0")}
    sizes = [p["size"] for p in packages["only_a"]]
    assert sizes == sorted(sizes, reverse=True)  # largest first
    assert docker_comparison["a"]["packages"]["count"] == len(truth_a)
    assert docker_comparison["b"]["packages"]["count"] == len(truth_b)


def test_shared_layers_and_bytes_match_the_engine(
    docker_comparison: dict[str, Any], pair: ComparePair, docker_client: DockerClient
) -> None:
    layers_a = docker_client.images.get(pair.a.name).attrs["RootFS"]["Layers"]
    layers_b = docker_client.images.get(pair.b.name).attrs["RootFS"]["Layers"]
    shared = [d for d in layers_a if d in layers_b]
    assert len(shared) == 2  # the debootstrap layer and the marker layer
    assert docker_comparison["shared_layers"] == len(shared)
    sizes = layer_tar_sizes(docker_client, pair.a.name)
    assert docker_comparison["shared_bytes"] == sum(sizes[d] for d in shared)


def test_text_has_side_by_side_facts_verdict_and_advice(pair: ComparePair, tmp_path: Path) -> None:
    result = compare_cli("--source", "docker", pair.a.name, pair.b.name, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    flat = " ".join(out.split())  # the terminal renderer wraps lines
    assert "Removing packages in a layer on top does not make dockwise-test/cmp-b:1 smaller" in flat
    assert out.startswith("dockwise-test/cmp-a:1 vs dockwise-test/cmp-b:1")
    assert (
        "dockwise-test/cmp-b:1 is built on dockwise-test/cmp-a:1: it keeps all 2 of its layers "
        "and adds 1 more." in flat
    )
    # B has fewer packages only because a layer on top removed them: no "prefer it".
    assert "dockwise-test/cmp-b:1 has fewer packages but is no smaller" in flat
    assert "prefer it" not in flat
    assert "same glibc" in out
    assert f"has {len(PURGED)} fewer packages" in out
    assert "no apt lists" in out
    for label in ("User space", "Packages", "Size", "Shared layers", "Shell", "User", "Ports"):
        assert f"  {label}" in out
    # The terminal renderer shows inline code without its backticks (the JSON keeps them).
    assert "dockwise-marker 1.0 → 2.0" in flat
    assert "Advice:" in out


def test_registry_compare_reads_shared_layers_once(
    pair: ComparePair,
    registry_proxy: CountingProxy,
    docker_comparison: dict[str, Any],
    tmp_path: Path,
) -> None:
    a = pair.pushed_a.replace(pair.registry_host, registry_proxy.host, 1)
    b = pair.pushed_b.replace(pair.registry_host, registry_proxy.host, 1)
    manifest_a = skopeo_inspect(pair.pushed_a, "--raw")
    manifest_b = skopeo_inspect(pair.pushed_b, "--raw")
    digests_a = [layer["digest"] for layer in manifest_a["layers"]]
    digests_b = [layer["digest"] for layer in manifest_b["layers"]]
    registry_proxy.reset()
    result = compare_cli(
        "--json", "--source", "registry", a, b, cache=tmp_path, insecure=registry_proxy.host
    )
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    # Same answers as from the engine: the content is the same.
    assert obj["shared_layers"] == docker_comparison["shared_layers"] == 2
    assert obj["shared_bytes"] == docker_comparison["shared_bytes"]
    assert obj["packages"] == docker_comparison["packages"]
    assert obj["a"]["size"]["compressed"] == sum(x["size"] for x in manifest_a["layers"])
    # The debootstrap layer both share is downloaded once for the two images.
    assert digests_a[0] == digests_b[0]
    assert registry_proxy.blob_gets.get(digests_a[0]) == 1
    # The layers holding each image's dpkg database are read a second time for the package
    # names (the scan keeps only counts); every other layer once.
    for digest in set(digests_a) | set(digests_b):
        assert registry_proxy.blob_gets.get(digest, 0) <= 2
    # A second comparison is served from the caches: no blob downloaded again.
    registry_proxy.reset()
    again = compare_cli(
        "--json", "--source", "registry", a, b, cache=tmp_path, insecure=registry_proxy.host
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["packages"] == obj["packages"]
    assert sum(registry_proxy.blob_gets.values()) == 0


def test_compare_different_user_spaces(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    result = compare_cli(
        "--json",
        "--source",
        "docker",
        test_images.debian.name,
        test_images.alpine.name,
        cache=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["shared_layers"] == 0 and obj["shared_bytes"] == 0
    assert obj["a"]["os"]["id"] == "debian" and obj["b"]["os"]["id"] == "alpine"
    only_b = {p["name"]: p["version"] for p in obj["packages"]["only_b"]}
    from tests.fixtures.services import ALPINE_PACKAGES

    assert only_b == ALPINE_PACKAGES
    assert {p["name"] for p in obj["packages"]["only_a"]} == set(
        dpkg_truth(docker_client, test_images.debian.name)
    )
    text = compare_cli(
        "--source", "docker", test_images.debian.name, test_images.alpine.name, cache=tmp_path
    ).stdout
    assert "They share no layers." in text and "musl" in text and "glibc" in text
    assert "apt lists" not in text  # Alpine never had any: not worth a remark
    assert "Shared layers    none" in text


def test_unknown_image_is_one_line(pair: ComparePair, tmp_path: Path) -> None:
    result = compare_cli("--source", "docker", pair.a.name, "dockwise-test/nope:1", cache=tmp_path)
    assert result.returncode != 0 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dockwise: error:")
    bad = compare_cli("--source", "nowhere", pair.a.name, pair.b.name, cache=tmp_path)
    assert bad.returncode == 2 and "invalid --source" in bad.stderr


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    import asyncio

    explainer = Explainer(Settings(cache_dir=tmp_path / "cache"))
    eng = Engine(knowledge=KnowledgeBase.load(), explainer=explainer)
    yield eng
    asyncio.run(eng.aclose())


@pytest.mark.parametrize(
    "template", ["compare {a} and {b}", "{a} vs {b}", "/image-explain {a} vs {b}"]
)
def test_chat_phrasings_route_to_compare(pair: ComparePair, engine: Engine, template: str) -> None:
    import asyncio

    reply = asyncio.run(engine.handle(template.format(a=pair.a.name, b=pair.b.name)))
    assert reply.kind is ReplyKind.IMAGE, reply.body
    assert reply.data is not None and reply.data["shared_layers"] == 2
    assert reply.title == "dockwise-test/cmp-a:1 vs dockwise-test/cmp-b:1"


def test_shell_compares_through_the_engine(pair: ComparePair, tmp_path: Path) -> None:
    from tests.test_shell import spawn

    child = spawn(tmp_path)
    child.sendline(f"compare {pair.a.name} and {pair.b.name}")
    child.expect_exact("dockwise-test/cmp-a:1 vs dockwise-test/cmp-b:1", timeout=240)
    child.expect_exact("Shared layers")
    child.expect_exact("dockwise> ")
    child.sendline("quit")
    child.expect_exact("bye")


def test_image_built_on_a_one_layer_base(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    """app is built on the one-layer Debian: the verdict says so in plain words."""
    base, app = test_images.debian.name, test_images.app.name
    layers = [docker_client.images.get(n).attrs["RootFS"]["Layers"] for n in (base, app)]
    assert len(layers[0]) == 1 and layers[1][:1] == layers[0]
    result = compare_cli("--source", "docker", base, app, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    added = len(layers[1]) - 1
    assert f"{app} is built on {base}: it keeps its layer and adds {added} more." in flat
    assert "all 1 of" not in flat


def test_slim_variant_verdict(
    pair: ComparePair, docker_client: DockerClient, tmp_path: Path
) -> None:
    """The issue's headline verdict: a slim variant built apart (no shared layers: A's
    filesystem with packages purged and the apt lists removed, copied onto scratch)."""
    context = tmp_path / "slim"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE} AS trim\nARG PURGE\n"
        "RUN dpkg --purge --force-depends,remove-essential $PURGE >/dev/null"
        " && rm -rf /var/lib/apt/lists/*\n"
        'FROM scratch\nCOPY --from=trim / /\nCMD ["bash"]\n'
    )
    with cache_lock():
        slim = docker_build(
            docker_client,
            "dockwise-test/cmp-slim:1",
            context,
            recipe_hash(context, pair.a.image_id, *PURGED),
            build_args={"BASE": pair.a.name, "PURGE": " ".join(PURGED)},
        )
    result = compare_cli("--source", "docker", pair.a.name, slim.name, cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    truth_a = dpkg_truth(docker_client, pair.a.name)
    truth_slim = dpkg_truth(docker_client, slim.name)
    fewer = len(truth_a) - len(truth_slim)
    assert fewer == len(PURGED)
    libc = truth_a["libc6:amd64"][0] if "libc6:amd64" in truth_a else truth_a["libc6"][0]
    assert "They share no layers." in flat
    assert f"with the same glibc ({libc})" in flat
    assert f"{slim.name} has {fewer} fewer packages than {pair.a.name}" in flat
    assert f"{slim.name} has no apt lists" in flat
    assert f"In short: {slim.name} is {pair.a.name}'s slim variant." in flat
    assert "prefer it" in flat  # a real slim image: fewer packages and smaller
