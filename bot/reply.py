"""The platform-neutral reply every adapter renders.

The body and section texts use a small Markdown subset that every chat platform's markup
and a terminal can show: paragraphs, ``- `` bullets, ``**bold**``, ```code```, fenced code
blocks and ``[text](url)`` links. Adapters convert; the engine never knows the platform.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ReplyKind(StrEnum):
    ANSWER = "answer"
    # About containers, but no article covers it: say so, link a docs search, offer
    # the closest articles as "maybe related" (``related``), never as the answer.
    UNCOVERED = "uncovered"
    FALLBACK = "fallback"
    IMAGE = "image"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    url: str


@dataclass(frozen=True, slots=True)
class Action:
    """A button under the reply; each adapter renders it as its platform's button.

    ``action_id`` is one of the stable identifiers below (other tools key on them); where
    several share one block, an adapter may add a suffix (``dockwise_ask_2``). ``value``
    carries the meaning (an article id, a question, ``<image ref>|<section title>``,
    ``up|<topic>``) and stays under 2,000 characters (the button value limit of the
    strictest platform).
    """

    action_id: str
    label: str
    value: str


# Stable action identifiers (prefixes), shared by every adapter.
ACTION_FULL_ARTICLE = "dockwise_full_article"
ACTION_ASK = "dockwise_ask"
ACTION_SECTION = "dockwise_section"
ACTION_FEEDBACK = "dockwise_feedback"


@dataclass(frozen=True, slots=True)
class Section:
    """A titled block of the reply (e.g. "Layers", "Advice") that adapters may split on."""

    title: str
    body: str


@dataclass(slots=True)
class Reply:
    kind: ReplyKind
    title: str
    body: str
    facts: list[Fact] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    topic: str | None = None
    related: list[str] = field(default_factory=list)
    # Structured payload for machine consumers (e.g. image facts as JSON); never rendered.
    data: dict[str, Any] | None = None
    # Buttons offered under the reply (full article, follow-up questions, sections, feedback).
    actions: list[Action] = field(default_factory=list)
    # For answers: the whole article as Markdown, and the heading of the section shown
    # (None when only the lead is shown). ``body`` is the short, targeted reply.
    article: str | None = None
    section: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = str(self.kind)
        return out

    def to_json(self) -> str:
        """The reply as one JSON object (``to_dict``): what a job queue stores as a job's
        result. ``data`` must hold JSON values; ``Reply.from_json`` reads it back."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Reply:
        """The reply ``to_json`` wrote (equal to the original). Raises ValueError for text
        that is not such an object (bad JSON, unknown kind, missing or mistyped fields)."""
        try:
            doc = json.loads(text)
            return cls(
                kind=ReplyKind(doc["kind"]),
                title=str(doc["title"]),
                body=str(doc["body"]),
                facts=[Fact(**f) for f in doc.get("facts", [])],
                sections=[Section(**s) for s in doc.get("sections", [])],
                sources=[Source(**s) for s in doc.get("sources", [])],
                suggestions=[str(s) for s in doc.get("suggestions", [])],
                topic=doc.get("topic"),
                related=[str(r) for r in doc.get("related", [])],
                data=doc.get("data"),
                actions=[Action(**a) for a in doc.get("actions", [])],
                article=doc.get("article"),
                section=doc.get("section"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a reply: {type(exc).__name__} {exc}") from None

    def plain_text(self) -> str:
        """The whole reply as plain text: the fallback every platform accepts."""
        parts = [self.title, self.body]
        parts += [f"{f.name}: {f.value}" for f in self.facts]
        for s in self.sections:
            parts += [s.title, s.body]
        if self.sources:
            parts.append("Sources: " + ", ".join(f"{s.title} <{s.url}>" for s in self.sources))
        return "\n\n".join(p for p in parts if p)
