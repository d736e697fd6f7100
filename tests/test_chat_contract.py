"""The adapter contract (bot.chat): the registry, ``serve`` running every configured
adapter, and a third platform added as one module plus one registry line."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import adapters
from bot.chat import adapters as registered
from bot.chat import configured_adapters, how_to_configure
from bot.config import Settings
from bot.engine import Engine
from bot.errors import InvalidInput
from bot.knowledge import KnowledgeBase
from bot.serve import serve
from tests.fixtures.registry import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_registry_lists_one_module_per_platform() -> None:
    found = registered()
    assert set(found) == {"slack", "discord"}
    assert adapters.PLATFORMS == ["adapters.slack", "adapters.discord"]
    for name, adapter in found.items():
        assert adapter.name == name
        assert adapter.__module__ == f"adapters.{name}"


def test_bot_package_imports_no_platform() -> None:
    platform_import = re.compile(
        r"^\s*(?:from|import)\s+(?:slack\w*|discord\w*|adapters\.(?:slack|discord)\w*)\b",
        re.M,
    )
    for path in (ROOT / "bot").rglob("*.py"):
        if path.name == "cli.py":  # `dockwise discord-invite` (a platform's own command)
            continue
        assert not platform_import.search(path.read_text()), path.name
    # The modules this contract made platform-neutral do not even name a platform.
    for name in ("chat.py", "serve.py", "actions.py", "progress.py", "links.py"):
        text = (ROOT / "bot" / name).read_text().lower()
        assert "slack" not in text and "discord" not in text, name


def test_configured_adapters_follow_the_settings() -> None:
    none = Settings(_env_file=None)
    assert configured_adapters(none) == []
    slack_http = Settings(_env_file=None, slack_bot_token="xoxb-1", slack_signing_secret="s")
    assert [a.name for a, _ in configured_adapters(slack_http)] == ["slack"]
    half = Settings(_env_file=None, slack_bot_token="xoxb-1")  # no app token, no secret
    assert configured_adapters(half) == []
    both = Settings(
        _env_file=None, slack_bot_token="xoxb-1", slack_app_token="xapp-1", discord_token="t"
    )
    assert [a.name for a, _ in configured_adapters(both)] == ["slack", "discord"]


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
            for _ in range(200):  # until the server is up (or serve failed)
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
    env["DOCKWISE_CACHE_DIR"] = str(tmp_path)
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
