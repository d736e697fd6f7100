"""The bot's own image, built from the repository's Dockerfile in the test Docker Engine.

No public registry is reachable, so the base is a stand-in for ``python:3.12-slim``: the
fixtures' debootstrapped Debian bookworm plus Debian's ``python3`` and ``python3-venv``,
flattened to one layer (as an official base is shipped). pip inside the build gets the
project's dependencies from a wheelhouse served on loopback (``--network host``, build
arguments ``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``); the wheelhouse itself is filled by pip in
a container of that base, so wheels match its Python exactly.

Then: the image answers a question, passes its own HEALTHCHECK, and dockwise explains it
from a real registry: non-root, no secrets in ENV, no wasted bytes.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from bot.image.redact import REDACTED
from tests.fixtures.registry import RegistryServer, free_port
from tests.fixtures.services import (
    CACHE,
    RECIPE_LABEL,
    EngineImage,
    cache_lock,
    digest_of,
    docker_build,
    ensure_debian_base,
    require_services,
    run,
    skopeo_push,
)

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BASE = "dockwise-test/python-base:bookworm"
IMAGE = "dockwise-test/dockwise:own"
USER = "10001:10001"
PYTHON_RECIPE = """\
ARG BASE
FROM ${BASE}
RUN apt-get update \\
    && apt-get install -y --no-install-recommends python3 python3-venv \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
"""


@dataclass(frozen=True)
class OwnImage:
    name: str
    base: str
    wheelhouse_url: str
    inspect: dict[str, Any]


def _context_files() -> list[Path]:
    """What .dockerignore lets into the build context (its allow-list), sorted."""
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml"]
    files.append(ROOT / "README.md")
    for folder in ("bot", "adapters", "knowledge"):
        files += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    return sorted(files)


def _ensure_python_base(client: DockerClient) -> str:
    """Debian + python3 + python3-venv as one layer, rebuilt only when its recipe changes."""
    debian = ensure_debian_base(client)
    recipe = digest_of(debian.recipe, PYTHON_RECIPE, "flat-v1")
    image = client.images.list(filters={"label": f"{RECIPE_LABEL}={recipe}"})
    if any(PYTHON_BASE in (i.tags or []) for i in image):
        return PYTHON_BASE
    context = CACHE / "python-base"
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(PYTHON_RECIPE)
    layered = docker_build(
        client, PYTHON_BASE + "-layered", context, recipe, build_args={"BASE": debian.name}
    )
    container = run(["docker", "create", layered.name]).strip()
    try:
        export = subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE)
        try:
            run(
                [
                    "docker",
                    "import",
                    "--change",
                    f"LABEL {RECIPE_LABEL}={recipe}",
                    "--change",
                    'CMD ["python3"]',
                    "-",
                    PYTHON_BASE,
                ],
                stdin=export.stdout,
            )
        finally:
            if export.stdout is not None:
                export.stdout.close()
            export.wait()
    finally:
        run(["docker", "rm", "-f", container])
    return PYTHON_BASE


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*project["project"]["dependencies"], *project["build-system"]["requires"]]


def _ensure_wheelhouse(base: str) -> Path:
    """Wheels of every dependency (and the build backend) for the base's Python, fetched
    by pip running in that base with this machine's index settings and CA bundle."""
    reqs = _requirements()
    python = run(["docker", "run", "--rm", "--network", "none", base, "python3", "-V"]).strip()
    house = CACHE / f"wheelhouse-{digest_of(python, *reqs)}"
    done = house.with_name(house.name + ".done")
    if done.exists():
        return house
    for stale in CACHE.glob("wheelhouse-*"):  # wheelhouses of older requirements
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink()
    house.mkdir(parents=True, exist_ok=True)
    cmd = ["docker", "run", "--rm", "--network", "host", "-v", f"{house}:/wheelhouse"]
    env = ["PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_DEFAULT_TIMEOUT=120"]
    ca = Path(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt")
    if ca.is_file():  # a proxy with its own CA: trust what this machine trusts
        cmd += ["-v", f"{ca}:/run/host-ca.crt:ro"]
        env.append("PIP_CERT=/run/host-ca.crt")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        value = os.environ.get(name, "")
        if value and not value.startswith("file:"):
            env.append(f"{name}={value}")
    for item in env:
        cmd += ["-e", item]
    script = (
        "python3 -m venv /tmp/pip && /tmp/pip/bin/pip download --quiet --only-binary=:all: "
        "--dest /wheelhouse " + " ".join(shlex.quote(r) for r in reqs)
    )
    run([*cmd, base, "sh", "-c", script], timeout=900)
    done.touch()
    return house


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _serve_directory(directory: Path) -> Iterator[str]:
    """A static file server on loopback: pip's --find-links reads its listing."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def own_image(docker_client: DockerClient) -> OwnImage:
    require_services()
    with cache_lock():
        base = _ensure_python_base(docker_client)
        house = _ensure_wheelhouse(base)
    recipe = digest_of(
        base,
        *(str(p.relative_to(ROOT)) for p in _context_files()),
        *(p.read_bytes() for p in _context_files()),
    )
    with _serve_directory(house) as url:
        built: EngineImage = docker_build(
            docker_client,
            IMAGE,
            ROOT,
            recipe,
            build_args={"BASE_IMAGE": base, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": url},
        )
    inspect = json.loads(run(["docker", "image", "inspect", built.name]))[0]
    return OwnImage(built.name, base, url, inspect)


def docker_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", *args], capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------- tests


def test_image_config_is_unprivileged_and_labelled(own_image: OwnImage) -> None:
    config = own_image.inspect["Config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["dockwise"]
    assert config["Cmd"] == ["serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["DOCKWISE_HOST"] == "0.0.0.0"
    assert "DOCKWISE_KNOWLEDGE_DIR" not in env  # the articles are package data
    assert env["PIP_NO_CACHE_DIR"] == "1"
    assert not any(key.startswith("PIP_") and key != "PIP_NO_CACHE_DIR" for key in env)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.base.name"] == own_image.base
    assert labels["org.opencontainers.image.title"] == "dockwise"
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    # the build stage's package index never reaches the final image
    history = run(["docker", "history", "--no-trunc", own_image.name])
    metadata = history + json.dumps(own_image.inspect)
    for leak in ("PIP_FIND_LINKS", "PIP_NO_INDEX", own_image.wheelhouse_url):
        assert leak not in metadata, leak


def test_image_holds_no_build_tools_or_wheels(own_image: OwnImage) -> None:
    script = (
        "import os, shutil, sys; "
        "found = [p for p in ('/wheels', '/src', '/opt/build', '/out') if os.path.exists(p)]; "
        "found += [t for t in ('gcc', 'cc', 'make', 'pip', 'pip3') if shutil.which(t)]; "
        "print(os.getuid(), os.getgid(), found, os.access('/opt/venv', os.W_OK), "
        "os.access('/var/cache/dockwise', os.W_OK), sys.prefix)"
    )
    result = docker_run(
        "--network", "none", "--entrypoint", "python3", own_image.name, "-c", script
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10001", "10001", "[]", "False", "True", "/opt/venv"]


def test_image_answers_a_question(own_image: OwnImage) -> None:
    result = docker_run(
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        own_image.name,
        "ask",
        "--json",
        "why FROM ubuntu?",
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["kind"] == "answer"
    assert answer["topic"] == "why-base-image"
    assert answer["sources"]


def test_image_ships_a_fitted_router(own_image: OwnImage) -> None:
    """The router was fitted at build time: answering never imports scikit-learn."""
    script = (
        "import sys; from bot.knowledge import KnowledgeBase; "
        "kb = KnowledgeBase.load(); print(kb.answer('is a container a VM?').topic, "
        "'sklearn' in sys.modules)"
    )
    result = docker_run(
        "--network", "none", "--read-only", "--entrypoint", "python3", own_image.name,
        "-c", script,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["containers-vs-vms", "False"]


def test_image_healthcheck_passes_against_its_health_server(own_image: OwnImage) -> None:
    """Start the health/metrics app in the image and let Docker run the image's own
    HEALTHCHECK command until the engine reports the container healthy."""
    port = free_port()
    server = (
        "import asyncio, os\n"
        "from bot.server import build_web_app, start_web_app\n"
        "async def main():\n"
        "    await start_web_app(build_web_app(), '127.0.0.1', int(os.environ['DOCKWISE_PORT']))\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    container = run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "-e",
            f"DOCKWISE_PORT={port}",
            "--health-interval",
            "1s",
            "--health-start-period",
            "30s",
            "--entrypoint",
            "python3",
            own_image.name,
            "-c",
            server,
        ]
    ).strip()
    try:
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline:
            state = json.loads(run(["docker", "inspect", container]))[0]["State"]
            status = state.get("Health", {}).get("Status", "")
            if status == "healthy" or not state["Running"]:
                break
            time.sleep(0.5)  # polling the engine's health state, not timing the test
        assert status == "healthy", run(["docker", "logs", container])
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)


def test_dockwise_explains_its_own_image(own_image: OwnImage, registry: RegistryServer) -> None:
    """The image explains itself: dockwise in the container, read-only, reads its own
    image from the registry."""
    ref = f"{registry.host}/dockwise:test"
    skopeo_push(own_image.name, ref)
    result = docker_run(
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges:true",
        "--mount",
        "type=tmpfs,destination=/var/cache/dockwise,tmpfs-mode=1777",
        "--mount",
        "type=tmpfs,destination=/tmp",
        "-e",
        f"DOCKWISE_INSECURE_REGISTRIES={registry.host}",
        own_image.name,
        "explain",
        ref,
        "--json",
        "--source",
        "registry",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["user"] == USER
    assert facts["runs_as_root"] is False
    assert REDACTED not in facts["env"].values()  # no secret in ENV
    assert facts.get("secrets", []) == []
    assert facts["wasted_bytes"] == 0  # one-layer base, and no RUN in the final stage
    assert facts["base_image"] == own_image.base  # from the base.name label
    assert facts["entrypoint"] == ["dockwise"]
    layers = own_image.inspect["RootFS"]["Layers"]
    assert len([layer for layer in facts["layers"] if not layer["empty"]]) == len(layers)
    size_mb = own_image.inspect["Size"] / 1e6
    compressed = (facts["size"]["compressed"] or 0) / 1e6
    print(
        f"\nown image: {size_mb:.0f} MB uncompressed ({compressed:.0f} MB compressed), "
        f"{len(layers)} layers; advice: {facts['advice']}"
    )
