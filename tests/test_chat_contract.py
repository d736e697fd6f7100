"""The adapter contract (bot.chat): the registry, ``serve`` running every configured
adapter, and a third platform added as one module plus one registry line."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import adapters
from bot.chat import adapters as registered
from bot.chat import configured_adapters, how_to_configure, secret_env_vars
from bot.config import Settings
from bot.engine import Engine
from bot.errors import InvalidInput
from bot.knowledge import KnowledgeBase
from bot.serve import serve
from tests.fixtures.registry import free_port
from tests.fixtures.router import seed_router

ROOT = Path(__file__).resolve().parent.parent


def test_registry_lists_one_module_per_platform() -> None:
    found = registered()
    assert set(found) == {"slack", "discord"}
    assert adapters.PLATFORMS == ["adapters.slack", "adapters.discord"]
    for name, adapter in found.items():
        assert adapter.name == name
        assert adapter.__module__ == f"adapters.{name}"


#: Under bot/, data (models, rules, corpora) may name anything; code and docs may not.
DATA_DIRS = ("bot/models", "bot/data", "bot/image/data")


def test_bot_package_imports_no_platform() -> None:
    platform_import = re.compile(
        r"^\s*(?:from|import)\s+(?:slack\w*|discord\w*|adapters\.(?:slack|discord)\w*)\b",
        re.M,
    )
    for path in (ROOT / "bot").rglob("*.py"):
        assert not platform_import.search(path.read_text()), path.name
    # No file under bot/ (code, docstrings, comments) even names a platform.
    checked = 0
    for path in sorted((ROOT / "bot").rglob("*")):
        relative = path.relative_to(ROOT).as_posix()
        if not path.is_file() or "__pycache__" in relative or relative.startswith(DATA_DIRS):
            continue
        text = path.read_text(errors="replace").lower()
        checked += 1
        for word in ("slack", "discord"):
            assert word not in text, f"{relative} names {word}"
    assert checked > 20  # the walk really saw the package


def test_configured_adapters_follow_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each platform reads its own variables (its ``settings_model``), not bot.config's."""
    monkeypatch.chdir(tmp_path)  # no .env file
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    shared = Settings(_env_file=None)
    assert configured_adapters(shared) == []
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")  # no app token, no secret
    assert configured_adapters(shared) == []
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "")  # empty counts as unset
    assert configured_adapters(shared) == []
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    assert [a.name for a, _ in configured_adapters(shared)] == ["slack"]
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1")
    (tmp_path / ".env").write_text("DISCORD_TOKEN=t\n")  # read from .env too
    chosen = configured_adapters(shared)
    assert [a.name for a, _ in chosen] == ["slack", "discord"]
    assert chosen[1][1].discord_token.get_secret_value() == "t"
    assert not hasattr(shared, "discord_token") and not hasattr(shared, "slack_bot_token")


def test_secret_env_vars_come_from_each_platform_s_settings() -> None:
    names = set(secret_env_vars())
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"} <= names
    assert {"DISCORD_TOKEN", "DOCKWISE_REDIS_URL"} <= names
    assert "DOCKWISE_SLACK_API_URL" not in names and "DISCORD_GUILD_ID" not in names


@pytest.mark.usefixtures("third_platform")
def test_a_third_platform_s_secrets_are_masked_in_logs() -> None:
    from bot.observability import SecretMasker

    assert "LOOPCHAT_SECRET" in secret_env_vars()
    masker = SecretMasker({"LOOPCHAT_SECRET": "loop-secret-1234"})
    assert masker.mask_text("got loop-secret-1234 here") == "got *** here"


async def test_serve_without_a_platform_says_what_to_set() -> None:
    with pytest.raises(InvalidInput) as caught:
        await serve(Settings(_env_file=None))
    message = str(caught.value)
    assert message == how_to_configure()
    for hint in ("SLACK_BOT_TOKEN", "DISCORD_TOKEN", "dockwise chat"):
        assert hint in message


@pytest.fixture
def third_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one line a new platform adds to the registry."""
    monkeypatch.setattr(adapters, "PLATFORMS", [*adapters.PLATFORMS, "tests.fixtures.loopchat"])
    monkeypatch.setenv("LOOPCHAT_SECRET", "loop-secret-1234")


@pytest.mark.usefixtures("third_platform")
async def test_a_third_platform_is_one_module_and_one_line() -> None:
    port = free_port()
    settings = Settings(_env_file=None, host="127.0.0.1", port=port)
    assert [a.name for a, _ in configured_adapters(settings)] == ["loopchat"]
    engine = Engine(knowledge=KnowledgeBase.load())
    task = asyncio.create_task(serve(settings, engine))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:  # until the server is up (or serve failed), within a deadline
                assert time.monotonic() < deadline, "serve did not come up within 60 s"
                if task.done():
                    task.result()
                try:
                    async with http.get(f"{base}/readyz") as resp:
                        ready = await resp.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            assert ready["checks"] == {"loopchat": True}
            async with http.post(
                f"{base}/loopchat",
                json={"text": "is a container a VM?"},
                headers={"X-Secret": "loop-secret-1234"},
            ) as resp:
                assert resp.status == 200
                messages: list[dict[str, Any]] = await resp.json()
        expected = engine.ask("is a container a VM?")
        assert messages[0]["text"].startswith(expected.title)
        ids = [b["id"] for b in messages[-1]["buttons"]]
        assert "dockwise_feedback" in ids and "dockwise_full_article" in ids
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_run_without_platforms_falls_back_to_the_shell(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_", "DOCKWISE_"))
    }
    env["HOME"] = str(tmp_path)
    env["DOCKWISE_CACHE_DIR"] = str(seed_router(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"],
        input="is a container a VM?\nquit\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "starting the shell adapter" in result.stderr
    assert "dockwise>" in result.stdout and "bye" in result.stdout


@pytest.mark.usefixtures("third_platform")
def test_config_shows_a_platform_s_own_settings_masked() -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "LOOPCHAT_SECRET = ***" in result.output
    assert "loop-secret-1234" not in result.output


@pytest.mark.usefixtures("third_platform")
def test_config_masks_each_platform_s_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-config-test-1")
    monkeypatch.setenv("DISCORD_TOKEN", "discord-config-test-1")
    monkeypatch.setenv("DISCORD_GUILD_ID", "42")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    lines = set(result.output.splitlines())
    assert {"SLACK_BOT_TOKEN = ***", "DISCORD_TOKEN = ***", "DISCORD_GUILD_ID = 42"} <= lines
    assert "config-test-1" not in result.output


def test_a_platform_adds_its_own_cli_command(tmp_path: Path) -> None:
    """`dockwise discord-invite` comes from the adapter (``register_cli``), same options."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    run = [sys.executable, "-m", "bot"]
    common: dict[str, Any] = {
        "capture_output": True,
        "text": True,
        "cwd": tmp_path,
        "env": {**env, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
        "timeout": 120,
    }
    listed = subprocess.run([*run, "--help"], **common)
    assert listed.returncode == 0 and "discord-invite" in listed.stdout
    url = subprocess.run([*run, "discord-invite", "--application-id", "1234567890"], **common)
    assert url.returncode == 0, url.stderr
    assert url.stdout.startswith("https://discord.com/oauth2/authorize?client_id=1234567890")
    missing = subprocess.run([*run, "discord-invite"], **common)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("dockwise: error: set DISCORD_TOKEN or pass --application-id")
