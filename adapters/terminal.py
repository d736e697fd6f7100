"""Render a Reply as terminal text (the shell adapter and the CLI share this)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.markdown import Markdown

from bot.reply import Reply, ReplyKind


def _markdown(markdown: str, width: int, color: bool) -> list[str]:
    """Reply Markdown as terminal lines through rich (which parses with markdown-it-py,
    like every renderer of ``bot.markdown``): links show their URL, no trailing padding."""
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        color_system="standard" if color else None,
        force_terminal=color,
        no_color=not color,
        legacy_windows=False,
    )
    console.print(Markdown(markdown, hyperlinks=False, code_theme="ansi_dark"))
    lines = [line.rstrip() for line in out.getvalue().split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def render_text(reply: Reply, *, width: int = 88, color: bool = False) -> str:
    title = reply.title
    if color:
        style = "\033[31m" if reply.kind is ReplyKind.ERROR else "\033[1;36m"
        title = f"{style}{title}\033[0m"
    out = [title, ""]
    out += _markdown(reply.body, width, color)
    if reply.facts:
        out.append("")
        pad = max(len(f.name) for f in reply.facts)
        out += [f"  {f.name.ljust(pad)}  {f.value}" for f in reply.facts]
    for section in reply.sections:
        out += ["", section.title + ":"]
        out += _markdown(section.body, width, color)
    if reply.sources:
        out += ["", "Sources:"]
        out += [f"  - {s.title}: {s.url}" for s in reply.sources]
    if reply.suggestions:
        out += ["", "Maybe related:" if reply.kind is ReplyKind.UNCOVERED else "Try also:"]
        out += [f"  - {s}" for s in reply.suggestions]
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)
