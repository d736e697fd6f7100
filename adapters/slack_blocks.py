"""Render a ``Reply`` as Slack Block Kit messages that always fit Slack's limits.

Everything that reaches Slack is escaped first (``&``, ``<``, ``>``), so user-controlled
text (a question echoed back, image labels, ENV values, history) can never turn into a
``<!channel>`` ping or a ``<@U…>`` mention. The only ``<…>`` sequences in the output are
the links this module builds itself from the reply's Markdown links and sources.

Limits honoured (Slack rejects the message otherwise): at most 50 blocks per message, a
header's plain text at most 150 characters, a section's text at most 3,000, at most 10
fields per section and 2,000 characters per field, at most 10 context elements. Long
bodies are split on paragraph, then line, then word boundaries (a single word is cut
only when it is longer than a whole section); fenced code is closed and reopened across
the cut. When one message cannot hold the reply, the rest goes into continuation messages.
"""

from __future__ import annotations

import re
from typing import Any

from markdown_it.token import Token

from bot.actions import element_ids
from bot.markdown import parse, split
from bot.reply import ACTION_ASK, Reply, ReplyKind

MAX_BLOCKS = 50
MAX_HEADER = 150
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_CONTEXT_TEXT = 3000
MAX_ACTION_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
#: The plain ``text`` of every message (notifications, screen readers, old clients).
MAX_FALLBACK_TEXT = 3000
#: Keep each message readable (and far below Slack's payload limits): this much block text
#: at most before the reply continues in a new message.
MAX_MESSAGE_CHARS = 12000

CONTINUED = "(continued)"
ELLIPSIS = "…"

Block = dict[str, Any]

_SAFE_URL = re.compile(r"^(?:https?://|mailto:)[^\s<>|]+$", re.IGNORECASE)
# A word for splitting purposes: links (which contain spaces) stay whole.
_WORD = re.compile(r"(?:<[^<>]*>|\S)+")


def escape(text: str) -> str:
    """Escape Slack's three control characters so text is shown, never interpreted."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, title: str) -> str:
    """A link the bot builds itself: ``<url|title>`` with the title escaped.

    URLs that are not plain http(s)/mailto addresses are shown as text instead.
    """
    if not _SAFE_URL.match(url):
        return escape(f"{title} ({url})")
    return f"<{url.replace('&', '&amp;')}|{escape(title).replace('|', '¦')}>"


# --- Markdown -> mrkdwn (tokens from bot.markdown.parse) ------------------------------


def _inline(token: Token) -> str:
    """An inline token's children as mrkdwn: text escaped, ``**b**`` -> ``*b*``, ``_i_``,
    ```code``` kept (escaped), ``[text](url)`` -> ``<url|text>``; autolinks and raw HTML
    stay plain escaped text (never a link or a mention)."""
    out: list[str] = []
    pending: tuple[str, list[str]] | None = None
    for child in token.children or []:
        kind = child.type
        if kind == "link_open":
            href = str(child.attrs.get("href") or "")
            pending = ("" if child.markup == "autolink" else href, [])
            continue
        if kind == "link_close" and pending is not None:
            href, parts = pending
            label = "".join(parts)
            out.append(link(href, label) if href else escape(f"<{label}>"))
            pending = None
            continue
        if kind == "text":
            piece = escape(child.content)
        elif kind == "code_inline":
            piece = f"`{escape(child.content)}`"
        elif kind in ("strong_open", "strong_close"):
            piece = "*"
        elif kind in ("em_open", "em_close"):
            piece = "_"
        elif kind in ("softbreak", "hardbreak"):
            piece = "\n"
        elif kind == "image":
            piece = escape(child.content)
        else:  # html_inline and anything else: shown as typed
            piece = escape(child.content)
        if pending is not None:
            pending[1].append(child.content if kind == "text" else piece)
        else:
            out.append(piece)
    return "".join(out)


def to_mrkdwn(markdown: str) -> str:
    """Convert reply Markdown to Slack mrkdwn (escaped, links built by us), walking the
    tokens of ``bot.markdown.parse``: headings bold, bullets ``•`` (nested indented),
    ordered items numbered, fenced and indented code as ```` ``` ```` blocks."""
    blocks: list[str] = []
    lines: list[str] = []
    lists: list[list[int]] = []  # per open list: [next number] or [-1] for bullets
    prefix = ""
    heading = False
    quote = 0
    for token in parse(markdown):
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            start = int(token.attrs.get("start") or 1) if kind == "ordered_list_open" else -1
            lists.append([start])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            counter = lists[-1]
            indent = "  " * (len(lists) - 1)
            prefix = f"{indent}• " if counter[0] < 0 else f"{indent}{counter[0]}. "
            if counter[0] >= 0:
                counter[0] += 1
        elif kind == "heading_open":
            heading = True
        elif kind == "heading_close":
            heading = False
        elif kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind == "inline":
            text = _inline(token)
            if heading:
                text = f"*{text}*"
            if quote:
                text = "\n".join("&gt; " + line for line in text.split("\n"))
            if prefix:
                text, prefix = prefix + text, ""
            lines.append(text)
        elif kind in ("fence", "code_block"):
            code = "\n".join(escape(line) for line in token.content.rstrip("\n").split("\n"))
            lines.append(f"```\n{code}\n```")  # Slack would show a language tag as text
        elif kind == "hr":
            lines.append("───")
        elif kind == "html_block":
            lines.append(escape(token.content.rstrip("\n")))
        if token.level == 0 and token.nesting <= 0 and kind not in ("inline",) and lines:
            blocks.append("\n".join(lines))
            lines = []
    if lines:
        blocks.append("\n".join(lines))
    return "\n\n".join(b for b in blocks if b.strip()).strip("\n")


# --- splitting -------------------------------------------------------------------------


def _safe_cut(text: str, cut: int) -> int:
    """Move ``cut`` back so it is not inside an ``&entity;`` or a ``<link|...>``."""
    amp = text.rfind("&", max(0, cut - 6), cut)
    if amp != -1 and ";" not in text[amp:cut]:
        cut = amp
    lt = text.rfind("<", 0, cut)
    if lt != -1 and ">" not in text[lt:cut]:
        cut = lt
    return cut if cut > 0 else len(text[:1])


def truncate(text: str, limit: int, suffix: str = ELLIPSIS) -> str:
    """Shorten mrkdwn to ``limit`` characters (suffix included), preferring a word break."""
    if len(text) <= limit:
        return text
    room = max(1, limit - len(suffix))
    cut = _safe_cut(text, room)
    space = text.rfind(" ", 0, cut)
    if space > room // 2:
        cut = space
    return text[:cut].rstrip() + suffix


def split_mrkdwn(mrkdwn: str, limit: int = MAX_SECTION_TEXT) -> list[str]:
    """Split converted mrkdwn into chunks of at most ``limit`` characters with the shared,
    fence-safe splitter (``bot.markdown.split``): ``<url|label>`` links stay whole and a
    cut never falls inside an ``&amp;`` entity."""
    return split(mrkdwn, limit, atom=_WORD, safe_cut=_safe_cut, reopen_fence="```")


# --- blocks ----------------------------------------------------------------------------


def _header_text(reply: Reply) -> str:
    title = reply.title.strip() or "dockwise"
    if reply.kind is ReplyKind.ERROR:
        title = f"⚠️ {title}"
    return truncate(escape(" ".join(title.split())), MAX_HEADER)


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(texts: list[str]) -> Block:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": t} for t in texts[:MAX_CONTEXT_ELEMENTS]],
    }


def _sources_text(reply: Reply) -> str | None:
    if not reply.sources:
        return None
    prefix, sep = "Sources: ", " · "
    text = prefix
    for i, source in enumerate(reply.sources):
        item = link(source.url, source.title or source.url)
        candidate = text + (sep if i else "") + item
        if len(candidate) > MAX_CONTEXT_TEXT:
            break
        text = candidate
    return text if text != prefix else None


def _suggestions_text(reply: Reply) -> str | None:
    if not reply.suggestions or any(a.action_id == ACTION_ASK for a in reply.actions):
        return None
    items = " · ".join(f"“{escape(s.strip())}”" for s in reply.suggestions if s.strip())
    return truncate(f"Try asking: {items}", MAX_CONTEXT_TEXT) if items else None


def action_blocks(reply: Reply) -> list[Block]:
    """The reply's buttons as one ``actions`` block (at most 25 buttons).

    ``action_id`` is the action's stable prefix; Slack refuses two equal ids in a block,
    so a repeated prefix gets a suffix: ``dockwise_ask``, ``dockwise_ask_2``, …, and the
    feedback pair is ``dockwise_feedback_up`` / ``dockwise_feedback_down``.
    """
    elements: list[Block] = []
    for action_id, action in element_ids(reply.actions):
        if len(action.value) > MAX_BUTTON_VALUE or not action.label.strip():
            continue
        label = " ".join(action.label.split())
        if len(label) > MAX_BUTTON_TEXT:
            label = label[: MAX_BUTTON_TEXT - 1].rstrip() + ELLIPSIS
        button: Block = {
            "type": "button",
            "action_id": action_id,
            "text": {"type": "plain_text", "text": label, "emoji": True},
            "value": action.value,
        }
        elements.append(button)
    if not elements:
        return []
    return [{"type": "actions", "block_id": "dockwise_actions", "elements": elements[:25]}]


def render_blocks(reply: Reply) -> list[Block]:
    """Every block of the reply, in order (may be more than one message can hold)."""
    blocks: list[Block] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _header_text(reply), "emoji": True},
        }
    ]
    blocks += [_section(chunk) for chunk in split_mrkdwn(to_mrkdwn(reply.body))]

    fields = [
        {
            "type": "mrkdwn",
            "text": truncate(f"*{escape(f.name)}*\n{escape(f.value)}", MAX_FIELD_TEXT),
        }
        for f in reply.facts
    ]
    for i in range(0, len(fields), MAX_FIELDS):
        blocks.append({"type": "section", "fields": fields[i : i + MAX_FIELDS]})

    for section in reply.sections:
        blocks.append({"type": "divider"})
        title = f"*{escape(' '.join(section.title.split()))}*"
        chunks = split_mrkdwn(to_mrkdwn(section.body))
        if chunks and len(title) + 1 + len(chunks[0]) <= MAX_SECTION_TEXT:
            chunks[0] = f"{title}\n{chunks[0]}"
        else:
            chunks.insert(0, truncate(title, MAX_SECTION_TEXT))
        blocks += [_section(chunk) for chunk in chunks]

    context = [t for t in (_sources_text(reply), _suggestions_text(reply)) if t]
    if context:
        blocks.append(_context(context))
    return blocks + action_blocks(reply)


def _block_text(block: Block) -> str:
    parts: list[str] = []
    if block["type"] == "actions":
        return ""
    if "text" in block:
        parts.append(str(block["text"]["text"]))
    parts += [str(f["text"]) for f in block.get("fields", [])]
    parts += [str(e["text"]) for e in block.get("elements", []) if "text" in e]
    return "\n".join(parts)


def _fallback(blocks: list[Block], *, continued_from: bool, continues: bool) -> str:
    text = "\n\n".join(t for t in (_block_text(b) for b in blocks) if t)
    if continued_from:
        text = f"{CONTINUED} {text}"
    suffix = f" {ELLIPSIS} {CONTINUED}"
    if continues:
        return truncate(text, MAX_FALLBACK_TEXT - len(suffix), suffix="") + suffix
    return truncate(text, MAX_FALLBACK_TEXT, suffix=suffix)


def render_messages(reply: Reply) -> list[dict[str, Any]]:
    """Message payloads (``text`` + ``blocks``), each within Slack's limits, in order."""
    groups: list[list[Block]] = [[]]
    size = 0
    for block in render_blocks(reply):
        length = len(_block_text(block))
        current = groups[-1]
        if current and (len(current) >= MAX_BLOCKS or size + length > MAX_MESSAGE_CHARS):
            if current[-1]["type"] == "divider":  # never end a message on a divider
                current.pop()
            groups.append([_context([f"_{CONTINUED}_"])])  # shown atop each continuation
            size = 0
            if block["type"] == "divider":
                continue
        groups[-1].append(block)
        size += length
    messages: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        messages.append(
            {
                "text": _fallback(
                    group[1:] if i else group, continued_from=i > 0, continues=i < len(groups) - 1
                ),
                "blocks": group,
            }
        )
    return messages


def render_text(text: str) -> dict[str, Any]:
    """A simple one-section message (usage, progress) with the text escaped."""
    mrkdwn = truncate(to_mrkdwn(text), MAX_SECTION_TEXT)
    return {"text": truncate(mrkdwn, MAX_FALLBACK_TEXT), "blocks": [_section(mrkdwn)]}
