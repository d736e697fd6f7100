"""The shell adapter, driven through its real prompt loop in a pseudo-terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

from adapters.shell import PROMPT
from bot.knowledge import FALLBACK_TITLE, KnowledgeBase
from tests.fixtures.router import seed_router

ROOT = Path(__file__).resolve().parent.parent


def spawn(cache: Path) -> pexpect.spawn:
    env = dict(os.environ, DOCKWISE_CACHE_DIR=str(seed_router(cache)), TERM="dumb")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "bot", "chat"],
        cwd=str(ROOT),
        env=env,
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    child.expect_exact(PROMPT)
    return child


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


def test_prompt_loop_answers_helps_falls_back_and_quits(tmp_path: Path, kb: KnowledgeBase) -> None:
    child = spawn(tmp_path)
    child.sendline("help")
    child.expect_exact("Things to try")
    child.expect_exact(PROMPT)
    child.sendline("is a container a VM?")
    child.expect_exact(kb.articles["containers-vs-vms"].title)
    child.expect_exact(PROMPT)
    child.sendline("what's a good lasagne recipe?")
    child.expect_exact(FALLBACK_TITLE)
    child.expect_exact(PROMPT)
    child.sendline("x" * 4100)
    child.expect("I read at most")
    child.expect_exact(PROMPT)
    child.sendline("quit")
    child.expect_exact("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    history = (tmp_path / "chat_history").read_text()
    assert "is a container a VM?" in history


def test_history_is_recalled_in_the_next_session(tmp_path: Path, kb: KnowledgeBase) -> None:
    first = spawn(tmp_path)
    first.sendline("alpine or slim?")
    first.expect_exact(PROMPT)
    first.sendeof()
    first.expect(pexpect.EOF)
    second = spawn(tmp_path)
    second.send("\x1b[A")  # up arrow: readline recalls the last question
    second.send("\r")
    second.expect_exact(kb.answer("alpine or slim?").title)
    second.sendline("quit")
    second.expect(pexpect.EOF)
