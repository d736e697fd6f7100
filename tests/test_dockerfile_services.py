"""Dockerfile explanations checked against the real engine.

The test Dockerfiles 49-53 start FROM the local test images (Docker Hub is unreachable), so
their bases can be inspected for real: the findings with inspection are the ``inspected``
lists of tests/data/dockerfiles/expected.yaml. Each file is then built with the real
``docker build``: the ones whose findings say the build fails must fail, and for the others
the built image's facts (read by the explainer from the engine) must be what the explanation
promised: user, ports, entrypoint/cmd, the number of layers and the base's user space.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from bot.config import Settings
from bot.dockerfile_explain import explain_dockerfile
from bot.image.explain import Explainer
from bot.image.facts import ImageFacts
from bot.reply import Reply
from tests.fixtures.services import (
    BuildError,
    ImageSet,
    docker_build,
    recipe_hash,
    require_services,
)
from tests.test_dockerfile import DATA, EXPECTED

pytestmark = pytest.mark.services
BUILT = sorted(name for name, entry in EXPECTED.items() if "inspected" in entry)


@pytest.fixture(autouse=True)
def _services() -> None:
    require_services()


def explain_inspected(text: str, cache: Path) -> tuple[Reply, dict[str, ImageFacts]]:
    async def run() -> tuple[Reply, dict[str, ImageFacts]]:
        explainer = Explainer(Settings(cache_dir=cache))
        seen: dict[str, ImageFacts] = {}

        async def facts_for(ref: str, platform: str | None) -> ImageFacts:
            facts = await explainer.facts(ref, source="docker")
            seen[ref] = facts
            return facts

        try:
            return await explain_dockerfile(text, facts_for=facts_for), seen
        finally:
            await explainer.aclose()

    return asyncio.run(run())


def image_facts(name: str, cache: Path) -> ImageFacts:
    async def run() -> ImageFacts:
        explainer = Explainer(Settings(cache_dir=cache))
        try:
            return await explainer.facts(name, source="docker")
        finally:
            await explainer.aclose()

    return asyncio.run(run())


def build(client: DockerClient, stem: str, tmp: Path) -> str:
    context = tmp / "ctx"
    context.mkdir(parents=True)
    shutil.copy(DATA / f"{stem}.Dockerfile", context / "Dockerfile")
    (context / "greeting.txt").write_text("hello from the build context\n")
    name = f"dockwise-test/df-{stem}:1"
    docker_build(client, name, context, recipe_hash(context, "dockerfile-test"))
    return name


def filesystem_layers(facts: ImageFacts) -> int:
    return sum(1 for layer in facts.layers if not layer.empty)


@pytest.mark.parametrize("stem", BUILT)
def test_inspected_findings_and_the_real_build(
    stem: str, test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    entry: dict[str, Any] = EXPECTED[stem]
    text = (DATA / f"{stem}.Dockerfile").read_text()
    reply, bases = explain_inspected(text, tmp_path / "cache")
    assert reply.data is not None
    got = sorted((f["line"], f["code"]) for f in reply.data["findings"])
    assert got == sorted((line, code) for line, code in entry["inspected"])
    for stage in reply.data["stages"]:
        if stage["base_kind"] == "image":
            assert stage["base_error"] is None
            assert stage["base_summary"], stage  # the one-line summary from the explainer

    if entry.get("build_fails"):
        with pytest.raises(BuildError) as info:
            build(docker_client, stem, tmp_path)
        message = str(info.value).lower()
        assert any(why in message for why in ("not found", "no such file", "permission denied"))
        return

    name = build(docker_client, stem, tmp_path)
    built = image_facts(name, tmp_path / "cache")
    final = reply.data["final_stage"]
    if final["base_kind"] == "scratch":
        # FROM scratch: nothing inherited; the shell-form RUN ran (no DW1005 was right).
        assert built.runs_as_root is final["runs_as_root"]
        assert built.user == final["user"] and built.entrypoint == final["entrypoint"]["words"]
        assert filesystem_layers(built) == len(final["layers"])
        assert built.shell and "no OS user space" in reply.plain_text()
        return
    base = bases[final["root_base"]]
    # What runs, as whom, on which ports: as promised.
    assert built.runs_as_root is final["runs_as_root"]
    if final["user_set_in_dockerfile"]:
        assert built.user == final["user"]
    assert built.exposed_ports == sorted(final["exposed_ports"], key=lambda p: int(p.split("/")[0]))
    entry_words = final["entrypoint"]["words"] if final["entrypoint"] else base.entrypoint
    assert built.entrypoint == entry_words
    if final["cmd"] is not None:
        assert built.cmd == final["cmd"]["words"]
    # Layers: the base's, plus one per RUN/COPY/ADD of the final stage (classic builder).
    assert filesystem_layers(built) == filesystem_layers(base) + len(final["layers"])
    # The user space is the base's, as the summary said.
    assert (built.os.id if built.os else None) == (base.os.id if base.os else None)
    assert built.shell is base.shell
    if base.scratch:
        assert "no OS user space" in reply.plain_text()
    else:
        assert base.os is not None and base.os.pretty_name
        assert reply.data["stages"][-1]["base_summary"].startswith("Debian GNU/Linux 12")


def test_root_finding_matches_the_built_image(
    test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    """DW1001 (no USER, root) on 51 and not on 52: the built images agree."""
    root = image_facts(build(docker_client, "51-root-on-debian", tmp_path / "a"), tmp_path / "c")
    user = image_facts(build(docker_client, "52-user-on-debian", tmp_path / "b"), tmp_path / "c")
    assert root.runs_as_root and root.user == ""
    assert not user.runs_as_root and user.user == "10002"


def test_no_user_finding_is_dropped_when_the_base_is_non_root(tmp_path: Path) -> None:
    """distroless runs as 65532: without inspection DW1001 is reported, with it it is not."""
    text = (DATA / "50-run-on-distroless.Dockerfile").read_text()
    reply, bases = explain_inspected(text, tmp_path)
    assert reply.data is not None
    assert "DW1001" not in {f["code"] for f in reply.data["findings"]}
    assert not bases["dockwise-test/distroless:1"].runs_as_root
    assert reply.data["final_stage"]["user"] == "65532:65532"
    # No ENTRYPOINT/CMD in the file: the explanation names what the base runs.
    assert "it runs what the base set: `/hello`" in reply.body
    assert "DW1001" in {c for _l, c in EXPECTED["50-run-on-distroless"]["findings"]}


@pytest.mark.parametrize(
    "text",
    [
        "FROM dockwise-test/debian:bookworm AS\n",
        "FROM dockwise-test/debian:bookworm AS a AS b\n",
        "FROM dockwise-test/debian:bookworm AS 2fast\n",
    ],
)
def test_from_lines_we_refuse_are_refused_by_the_engine(
    text: str, test_images: ImageSet, docker_client: DockerClient, tmp_path: Path
) -> None:
    """A FROM line our one-line error refuses is one `docker build` refuses too."""
    from bot.dockerfile_explain import parse_dockerfile
    from bot.errors import InvalidInput

    with pytest.raises(InvalidInput):
        parse_dockerfile(text)
    (tmp_path / "Dockerfile").write_text(text)
    with pytest.raises(BuildError) as info:
        docker_build(docker_client, "dockwise-test/df-bad-from:1", tmp_path, recipe_hash(tmp_path))
    message = str(info.value).lower()
    assert "from requires either one or three arguments" in message or "stage" in message


def test_wrong_package_manager_names_the_one_the_base_has(
    test_images: ImageSet, tmp_path: Path
) -> None:
    text = (DATA / "49-apt-on-alpine.Dockerfile").read_text()
    reply, bases = explain_inspected(text, tmp_path)
    assert reply.data is not None
    assert bases["dockwise-test/alpine:1"].packages is not None
    (finding,) = [f for f in reply.data["findings"] if f["code"] == "DW2001"]
    assert finding["message"].endswith("Its packages are apk's, so there is no `apt-get`.")
