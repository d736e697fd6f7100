"""The answer engine: one entry point for every adapter.

Adapters call ``await engine.handle(text)`` for anything a user typed (a question, or
"explain IMAGE"), or ``await engine.explain(ref)`` for an explicit image command. Both
always return a ``Reply``; user-caused failures become ``ReplyKind.ERROR`` replies with a
one-line message, never exceptions or tracebacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bot.errors import DockwiseError, InvalidInput
from bot.intent import ExplainIntent, parse_intent
from bot.knowledge import KnowledgeBase
from bot.reply import Reply, ReplyKind

if TYPE_CHECKING:
    from bot.image.explain import Explainer
    from bot.image.source import Platform

MAX_INPUT_CHARS = 4000


def error_reply(message: str, *, title: str = "Sorry, I couldn't do that") -> Reply:
    return Reply(kind=ReplyKind.ERROR, title=title, body=message)


def check_input(text: str) -> str:
    """Strip and validate user text; raises InvalidInput with a one-line message."""
    cleaned = text.strip()
    if not cleaned:
        raise InvalidInput('Empty question: ask me about containers, e.g. "why FROM ubuntu?"')
    if len(cleaned) > MAX_INPUT_CHARS:
        raise InvalidInput(
            f"That message is {len(cleaned):,} characters; I read at most {MAX_INPUT_CHARS:,}."
        )
    return cleaned


class Engine:
    def __init__(
        self, knowledge: KnowledgeBase | None = None, explainer: Explainer | None = None
    ) -> None:
        self.knowledge = knowledge if knowledge is not None else KnowledgeBase.load()
        self._explainer = explainer

    @property
    def explainer(self) -> Explainer:
        if self._explainer is None:
            from bot.image.explain import Explainer

            self._explainer = Explainer()
        return self._explainer

    def ask(self, question: str) -> Reply:
        """Answer a question from the knowledge base (fast, synchronous, no I/O)."""
        try:
            return self.knowledge.answer(check_input(question))
        except DockwiseError as exc:
            return error_reply(str(exc))

    async def handle(self, text: str) -> Reply:
        """Anything a user typed: a question, or a request to explain an image."""
        try:
            cleaned = check_input(text)
        except DockwiseError as exc:
            return error_reply(str(exc))
        intent = parse_intent(cleaned)
        if isinstance(intent, ExplainIntent):
            return await self.explain(intent.reference)
        return self.knowledge.answer(cleaned)

    async def explain(
        self,
        reference: str,
        *,
        source: Literal["auto", "registry", "docker"] = "auto",
        platform: Platform | None = None,
    ) -> Reply:
        try:
            ref = check_input(reference)
            return await self.explainer.explain(ref, source=source, platform=platform)
        except DockwiseError as exc:
            return error_reply(str(exc), title=f"Couldn't explain {reference.strip()[:100]}")

    async def aclose(self) -> None:
        if self._explainer is not None:
            await self._explainer.aclose()
