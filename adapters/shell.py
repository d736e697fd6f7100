"""The shell adapter: try dockwise in a terminal, no tokens needed.

An interactive prompt with line editing and history (GNU readline, history kept in the
cache dir), ``help`` and ``quit``. Every other line goes to the same engine, rendered by
the same terminal renderer the CLI uses.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TextIO

from adapters.terminal import render_text
from bot.engine import Engine
from bot.reply import Reply

PROMPT = "dockwise> "
BANNER = (
    "dockwise: ask me about containers and images, or type `explain IMAGE`.\n"
    "Type `help` for examples, `quit` to leave."
)
HELP = """Things to try:
  why do Dockerfiles start FROM ubuntu?
  is a container a VM?
  alpine or slim?
  explain debian:bookworm-slim       (inspects a real image)
  compare debian:12 and debian:12-slim
  dockerfile ./Dockerfile            (explains a Dockerfile; or paste one in ``` fences)
  topics                             (lists what I know about)
  more                               (the whole article behind the last answer)
  quit                               (or Ctrl-D)"""


def _setup_history(path: Path | None) -> None:
    if path is None:
        return
    try:
        import readline
    except ImportError:  # pragma: no cover - readline exists on Linux/macOS
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        readline.read_history_file(str(path))
    readline.set_history_length(1000)


def _save_history(path: Path | None) -> None:
    if path is None:
        return
    try:
        import readline

        readline.write_history_file(str(path))
    except (ImportError, OSError):
        pass


def _read_fenced(first: str) -> str:
    """A pasted fenced block: read lines up to the closing fence (or end of input)."""
    lines = [first]
    while True:
        try:
            line = input()
        except EOFError:
            break
        lines.append(line)
        if line.strip().startswith("```"):
            break
    return "\n".join(lines)


async def _dockerfile(engine: Engine, path: str) -> Reply:
    """``dockerfile PATH``: a local file (the shell only; chat never reads server files)."""
    from bot.dockerfile_explain import MAX_DOCKERFILE_BYTES
    from bot.engine import error_reply

    if not path:
        return error_reply("Which file? e.g. `dockerfile ./Dockerfile`")

    def read() -> bytes:
        with open(os.path.expanduser(path), "rb") as handle:
            return handle.read(MAX_DOCKERFILE_BYTES + 1)

    try:
        data = await asyncio.to_thread(read)
    except OSError as exc:
        return error_reply(f"cannot read {path}: {exc.strerror or exc}")
    if len(data) > MAX_DOCKERFILE_BYTES:
        return error_reply(f"{path} is over {MAX_DOCKERFILE_BYTES:,} bytes (64 KB).")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return error_reply(f"{path} is not UTF-8 text, so not a Dockerfile.")
    return await engine.explain_dockerfile(text)


def run_shell(
    engine: Engine,
    *,
    history_file: Path | None = None,
    stdout: TextIO = sys.stdout,
    color: bool = False,
) -> int:
    """Run the prompt loop until ``quit`` or end of input; returns the exit status."""
    _setup_history(history_file)
    print(BANNER, file=stdout, flush=True)
    last_topic: str | None = None
    try:
        with asyncio.Runner() as runner:
            while True:
                try:
                    line = input(PROMPT)
                except EOFError:
                    print(file=stdout)
                    break
                except KeyboardInterrupt:
                    print("\n(use `quit` or Ctrl-D to leave)", file=stdout, flush=True)
                    continue
                text = line.strip()
                if not text:
                    continue
                command = text.lower().rstrip("!.")
                if command in {"quit", "exit", "bye", ":q"}:
                    break
                if command in {"help", "?"}:
                    print(HELP, file=stdout, flush=True)
                    continue
                if text.startswith("```") and text.count("```") == 1:
                    text = _read_fenced(text)
                if command.startswith("dockerfile ") or command == "dockerfile":
                    reply = runner.run(_dockerfile(engine, text[len("dockerfile") :].strip()))
                    print(render_text(reply, color=color), file=stdout, flush=True)
                    continue
                if command == "topics":
                    width = max(len(a) for a in engine.knowledge.articles)
                    for article in engine.knowledge.articles.values():
                        print(f"  {article.id:{width}}  {article.title}", file=stdout)
                    stdout.flush()
                    continue
                if command == "more":
                    if last_topic is None:
                        print(
                            "`more` shows the whole article behind an answer; ask a question "
                            "that gets one first.",
                            file=stdout,
                        )
                    else:
                        full = engine.full_article(last_topic)
                        print(render_text(full, color=color), file=stdout)
                    stdout.flush()
                    continue
                reply = runner.run(engine.handle(text))
                print(render_text(reply, color=color), file=stdout, flush=True)
                last_topic = reply.topic if reply.article is not None else None
                if last_topic is not None:
                    print("(type `more` for the whole article)", file=stdout, flush=True)
            runner.run(engine.aclose())
    finally:
        _save_history(history_file)
    print("bye", file=stdout, flush=True)
    return 0
