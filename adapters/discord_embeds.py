"""Render a ``Reply`` as Discord embeds that always fit Discord's limits.

Discord rejects a whole message when any limit is crossed, so the renderer splits instead
of truncating content: long text is cut on paragraph, then line, then word boundaries into
several embeds, and embeds are packed into as many messages as needed. Open code fences
are closed at a cut and reopened in the next piece, so splitting never breaks formatting.

The reply's Markdown subset (paragraphs, ``- `` bullets, ``**bold**``, ```code```, fenced
blocks, ``[text](url)`` links) is what Discord renders natively, so text passes through.
Sources become masked links in a field; the footer cannot hold links, so it carries the
follow-up suggestions instead.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.actions import element_ids
from bot.markdown import split
from bot.reply import ACTION_ASK, ACTION_FEEDBACK, ACTION_FULL_ARTICLE, Reply, ReplyKind

# Discord's documented limits (https://discord.com/developers/docs/resources/message).
CONTENT_LIMIT = 2000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_COUNT_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
EMBEDS_PER_MESSAGE = 10
MESSAGE_EMBED_TOTAL_LIMIT = 6000

# Message components (https://discord.com/developers/docs/components/reference).
ROWS_MAX = 5
BUTTONS_PER_ROW = 5
CUSTOM_ID_MAX = 100
BUTTON_LABEL_MAX = 80
STYLE_PRIMARY, STYLE_SECONDARY, STYLE_SUCCESS, STYLE_DANGER = 1, 2, 3, 4
#: custom_id values too long for 100 characters are kept here (newest last) and sent as
#: ``<id>:#<hash>``; a click on a button older than this many long values is refused.
LONG_VALUES_KEPT = 4096
_long_values: OrderedDict[str, str] = OrderedDict()

ELLIPSIS = "…"

KIND_COLOURS: dict[ReplyKind, discord.Colour] = {
    ReplyKind.ANSWER: discord.Colour.from_rgb(36, 150, 237),  # container blue
    ReplyKind.IMAGE: discord.Colour.from_rgb(46, 160, 67),
    ReplyKind.FALLBACK: discord.Colour.light_grey(),
    ReplyKind.ERROR: discord.Colour.red(),
}


@dataclass(frozen=True, slots=True)
class Button:
    """One button: ``custom_id`` is ``<action id>:<value>`` (see ``custom_id``)."""

    custom_id: str
    label: str
    style: int


@dataclass(slots=True)
class RenderedMessage:
    """One message to send: its embeds fit every per-embed and per-message limit;
    ``rows`` are its buttons (at most 5 rows of 5), on the last message of a reply."""

    embeds: list[discord.Embed] = field(default_factory=list)
    rows: list[list[Button]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(embed_length(e) for e in self.embeds)

    def components(self) -> list[dict[str, Any]]:
        """The rows as Discord's component JSON (action rows of buttons)."""
        return [
            {
                "type": 1,
                "components": [
                    {"type": 2, "style": b.style, "label": b.label, "custom_id": b.custom_id}
                    for b in row
                ],
            }
            for row in self.rows
        ]

    def to_dict(self) -> dict[str, Any]:
        """The message payload Discord receives (embeds and components)."""
        payload: dict[str, Any] = {"embeds": [e.to_dict() for e in self.embeds]}
        if self.rows:
            payload["components"] = self.components()
        return payload


#: A digest in an image reference, and its compact form in a custom_id: the 32 bytes in
#: base64url (43 characters instead of 64), so digest-pinned images still fit in 100.
_DIGEST = re.compile(r"@sha256:([0-9a-f]{64})")
_COMPACT_DIGEST = re.compile(r"@~([A-Za-z0-9_-]{43})")


def _compact(value: str) -> str:
    return _DIGEST.sub(
        lambda m: "@~" + base64.urlsafe_b64encode(bytes.fromhex(m[1])).decode()[:43], value
    )


def _expand(value: str) -> str:
    return _COMPACT_DIGEST.sub(
        lambda m: "@sha256:" + base64.urlsafe_b64decode(m[1] + "=").hex(), value
    )


def custom_id(element_id: str, value: str) -> str:
    """``<element id>:<value>`` when it fits Discord's 100 characters; else
    ``<element id>:~<value>`` with each ``@sha256:<hex>`` digest written as
    ``@~<base64url>`` (stateless: any replica, any restart reads it back); else
    ``<element id>:#<sha256 prefix>`` with the value kept in this process's memory
    (``resolve_custom_id``)."""
    plain = f"{element_id}:{value}"
    if len(plain) <= CUSTOM_ID_MAX and not value.startswith(("#", "~")):
        return plain
    compact = f"{element_id}:~{_compact(value)}"
    if len(compact) <= CUSTOM_ID_MAX:
        return compact
    key = hashlib.sha256(value.encode()).hexdigest()[:24]
    _long_values[key] = value
    _long_values.move_to_end(key)
    while len(_long_values) > LONG_VALUES_KEPT:
        _long_values.popitem(last=False)
    return f"{element_id}:#{key}"


def resolve_custom_id(raw: str) -> tuple[str, str] | None:
    """(element id, value) of a button this renderer made, or None if it is not one."""
    element_id, sep, value = raw.partition(":")
    if not sep or not element_id.startswith("dockwise_"):
        return None
    if value.startswith("#"):
        kept = _long_values.get(value[1:])
        return None if kept is None else (element_id, kept)
    if value.startswith("~"):
        return element_id, _expand(value[1:])
    return element_id, value


def button_rows(reply: Reply) -> list[list[Button]]:
    """The reply's buttons: full article and feedback first, then follow-up questions and
    sections, five to a row, at most five rows."""
    buttons: list[Button] = []
    for element_id, action in element_ids(reply.actions):
        label = " ".join(action.label.split())
        if not label:
            continue
        style = STYLE_SECONDARY
        if action.action_id == ACTION_FULL_ARTICLE:
            style = STYLE_PRIMARY
        elif action.action_id == ACTION_FEEDBACK:
            style = STYLE_SUCCESS if element_id.endswith("_up") else STYLE_DANGER
        buttons.append(
            Button(custom_id(element_id, action.value), shorten(label, BUTTON_LABEL_MAX), style)
        )
    rows: list[list[Button]] = []
    row: list[Button] = []
    last_kind = ""
    for button in buttons:
        kind = button.custom_id.split(":", 1)[0].rstrip("_0123456789")
        kind = kind.removesuffix("_up").removesuffix("_down")
        if row and (len(row) >= BUTTONS_PER_ROW or kind != last_kind):
            rows.append(row)
            row = []
        row.append(button)
        last_kind = kind
    if row:
        rows.append(row)
    return rows[:ROWS_MAX]


def embed_length(embed: discord.Embed) -> int:
    """Characters Discord counts towards the 6000 limit of an embed."""
    return len(embed)


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters on a word boundary, with an ellipsis if cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters with the shared,
    fence-safe splitter (``bot.markdown.split``): paragraph, then line, then word breaks;
    a code fence open at a cut is closed there and reopened in the next piece. Pieces are
    never empty."""
    if limit < 200:
        raise ValueError("limit too small to split text cleanly")
    return split(text.strip("\n"), limit)


class _EmbedBuilder:
    """Fills embeds in order, starting a continuation embed whenever one would overflow."""

    def __init__(self, colour: discord.Colour) -> None:
        self.colour = colour
        self.embeds: list[discord.Embed] = []

    @property
    def current(self) -> discord.Embed:
        if not self.embeds:
            self.new()
        return self.embeds[-1]

    def new(self, title: str | None = None, description: str | None = None) -> discord.Embed:
        embed = discord.Embed(
            colour=self.colour,
            title=shorten(title, TITLE_LIMIT) if title else None,
            description=description or None,
        )
        self.embeds.append(embed)
        return embed

    def text(self, title: str | None, body: str) -> None:
        """A titled block of text: one embed per description-sized piece."""
        pieces = split_text(body, DESCRIPTION_LIMIT) or [""]
        for index, piece in enumerate(pieces):
            self.new(title if index == 0 else None, piece)

    def add_field(self, name: str, value: str, *, inline: bool = False) -> None:
        name = shorten(name, FIELD_NAME_LIMIT) or "\u200b"
        pieces = split_text(value, FIELD_VALUE_LIMIT) or ["—"]
        for index, piece in enumerate(pieces):
            piece_name = name if index == 0 else shorten(f"{name} (continued)", FIELD_NAME_LIMIT)
            embed = self.current
            if (
                len(embed.fields) >= FIELD_COUNT_LIMIT
                or embed_length(embed) + len(piece_name) + len(piece) > EMBED_TOTAL_LIMIT
            ):
                embed = self.new()
            embed.add_field(name=piece_name, value=piece, inline=inline)

    def footer(self, text: str) -> None:
        text = shorten(text, FOOTER_LIMIT)
        if not text:
            return
        embed = self.current
        if embed_length(embed) + len(text) > EMBED_TOTAL_LIMIT:
            embed = self.new()
        embed.set_footer(text=text)


def _source_lines(reply: Reply) -> str:
    return "\n".join(f"- [{shorten(s.title, 200)}]({s.url})" for s in reply.sources)


def render_embeds(reply: Reply) -> list[discord.Embed]:
    """Every embed of the reply, in reading order, each within Discord's embed limits."""
    builder = _EmbedBuilder(KIND_COLOURS.get(reply.kind, discord.Colour.blurple()))
    title = reply.title.strip()
    if len(title) > TITLE_LIMIT:  # keep the full title: the rest opens the description
        body = f"**{title}**\n\n{reply.body}"
        builder.text(shorten(title, TITLE_LIMIT), body)
    else:
        builder.text(title or None, reply.body)
    for fact in reply.facts:
        builder.add_field(fact.name, fact.value, inline=True)
    for section in reply.sections:
        if len(section.body) <= FIELD_VALUE_LIMIT and len(section.title) <= FIELD_NAME_LIMIT:
            builder.add_field(section.title, section.body)
        else:
            builder.text(section.title, section.body)
    if reply.sources:
        builder.add_field("Sources", _source_lines(reply))
    if reply.suggestions and not any(a.action_id == ACTION_ASK for a in reply.actions):
        builder.footer("Try also: " + " · ".join(reply.suggestions))
    return [e for e in builder.embeds if embed_length(e) > 0 or e.fields]


def pack_messages(embeds: list[discord.Embed]) -> list[RenderedMessage]:
    """Group embeds into messages of at most 10 embeds and 6000 embed characters."""
    messages: list[RenderedMessage] = []
    for embed in embeds:
        size = embed_length(embed)
        last = messages[-1] if messages else None
        if (
            last is None
            or len(last.embeds) >= EMBEDS_PER_MESSAGE
            or last.total + size > MESSAGE_EMBED_TOTAL_LIMIT
        ):
            last = RenderedMessage()
            messages.append(last)
        last.embeds.append(embed)
    return messages


def render_reply(reply: Reply) -> list[RenderedMessage]:
    """The reply as one or more messages of embeds, each accepted by Discord; the last
    one carries the buttons."""
    messages = pack_messages(render_embeds(reply))
    if messages:
        messages[-1].rows = button_rows(reply)
    return messages


def render_plain(reply: Reply) -> list[str]:
    """The reply as plain message contents of at most 2000 characters (the fallback)."""
    text = reply.plain_text()
    if reply.suggestions:
        text += "\n\nTry also: " + " · ".join(reply.suggestions)
    return split_text(text, CONTENT_LIMIT) or ["\u200b"]
