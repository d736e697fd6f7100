"""Render a Reply as terminal text (the shell adapter and the CLI share this)."""

from __future__ import annotations

import re
import textwrap

from bot.reply import Reply, ReplyKind

_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str, color: bool) -> str:
    text = _LINK.sub(r"\1 <\2>", text)
    if color:
        return _BOLD.sub("\033[1m\\1\033[0m", text)
    return _BOLD.sub(r"\1", text)


def _wrap(markdown: str, width: int, color: bool) -> list[str]:
    lines: list[str] = []
    in_code = False
    for raw in markdown.splitlines():
        if raw.strip().startswith("```"):
            in_code = not in_code
            continue
        if in_code or not raw.strip():
            lines.append(("    " + raw) if in_code else "")
            continue
        bullet = re.match(r"^(\s*)([-*]|\d+\.)\s+", raw)
        if bullet:
            indent = bullet.group(1) + "  "
            first = bullet.group(1) + "• "
            body = raw[bullet.end() :]
            lines += textwrap.wrap(
                _inline(body, color), width, initial_indent=first, subsequent_indent=indent
            ) or [first]
        else:
            lines += textwrap.wrap(_inline(raw, color), width) or [""]
    return lines


def render_text(reply: Reply, *, width: int = 88, color: bool = False) -> str:
    title = reply.title
    if color:
        style = "\033[31m" if reply.kind is ReplyKind.ERROR else "\033[1;36m"
        title = f"{style}{title}\033[0m"
    out = [title, ""]
    out += _wrap(reply.body, width, color)
    if reply.facts:
        out.append("")
        pad = max(len(f.name) for f in reply.facts)
        out += [f"  {f.name.ljust(pad)}  {f.value}" for f in reply.facts]
    for section in reply.sections:
        out += ["", section.title + ":"]
        out += _wrap(section.body, width, color)
    if reply.sources:
        out += ["", "Sources:"]
        out += [f"  - {s.title}: {s.url}" for s in reply.sources]
    if reply.suggestions:
        out += ["", "Maybe related:" if reply.kind is ReplyKind.UNCOVERED else "Try also:"]
        out += [f"  - {s}" for s in reply.suggestions]
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)
