"""What users install: the wheel, in a fresh virtualenv, run from another directory.

The wheel is built from this checkout and installed with ``--no-deps`` into a new venv;
its dependencies come from the project venv's site-packages through a ``.pth`` line (a
plain path entry: the project's editable finder is *not* activated), so only files the
wheel itself carries can answer. An editable install would hide missing package data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.fixtures.router import seed_router

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from the tracked files only: a stale build/ of the checkout can't leak in.
    source = tmp / "src"
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wheels = list((tmp / "dist").glob("dockwise-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    purelib = next((env_dir / "lib").glob("python3*/site-packages"))
    # Dependencies (not dockwise) from the project's environment.
    (purelib / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
         "--no-deps", "-q", str(wheels[0])],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return env_dir


def test_wheel_contents(installed: Path) -> None:
    wheel = next(installed.parent.joinpath("dist").glob("dockwise-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    articles = {Path(n).name for n in names if n.startswith("bot/knowledge_articles/")}
    assert {p.name for p in (ROOT / "knowledge").glob("*.md")} <= articles
    sources = [
        p.relative_to(ROOT).as_posix()
        for folder in ("bot", "adapters")
        for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    missing = [f for f in sources if f not in names]
    assert not missing, f"modules left out of the wheel (add their package): {missing}"
    for required in (
        "bot/models/minilm-static/model.safetensors",
        "bot/models/minilm-static/tokenizer.json",
        "bot/models/minilm-static/LICENSE",
        "bot/data/routing_negatives.yaml",
        "bot/data/routing_docker_topics.yaml",
    ):
        assert required in names


def test_installed_wheel_answers_from_another_directory(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DOCKWISE_KNOWLEDGE_DIR"}}
    # The fitted router (tests/fixtures/router.py): its file name hashes the articles, the
    # model and the training files, which the wheel must still carry to use it.
    env["DOCKWISE_CACHE_DIR"] = str(seed_router(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(installed / "bin" / "dockwise"), "ask", "--json", "why FROM ubuntu?"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert obj["kind"] == "answer" and obj["topic"] == "why-base-image"
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import bot; print(bot.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(installed))
