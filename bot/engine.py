"""The answer engine: one entry point for every adapter.

Adapters call ``await engine.handle(text)`` for anything a user typed (a question, or
"explain IMAGE"), or ``await engine.explain(ref)`` for an explicit image command. Both
always return a ``Reply``; user-caused failures become ``ReplyKind.ERROR`` replies with a
one-line message, never exceptions or tracebacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bot.errors import DockwiseError, InvalidInput
from bot.intent import (
    CompareIntent,
    DockerfileIntent,
    ExplainIntent,
    parse_dockerfile_or_compare,
    parse_intent,
)
from bot.limits import Admission, with_timeout
from bot.observability import (
    ERRORS,
    bind_correlation_id,
    count_question,
    current_correlation_id,
    get_logger,
    track_explanation,
)
from bot.reply import Reply, ReplyKind

if TYPE_CHECKING:
    from bot.image.explain import Explainer
    from bot.image.facts import ImageFacts
    from bot.image.source import Platform
    from bot.knowledge import KnowledgeBase

MAX_INPUT_CHARS = 4000
log = get_logger("dockwise.engine")


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


@dataclass(frozen=True, slots=True)
class Asker:
    """Who is asking, for rate limits: platform ("slack", "discord", "shell"), user, channel."""

    platform: str
    user: str
    channel: str | None = None


LOCAL = Asker("shell", "local")


class Engine:
    def __init__(
        self,
        knowledge: KnowledgeBase | None = None,
        explainer: Explainer | None = None,
        admission: Admission | None = None,
        explain_timeout: float | None = None,
    ) -> None:
        from bot.config import get_settings

        if knowledge is None:
            from bot.knowledge import KnowledgeBase  # numpy and the embedding model: load late

            knowledge = KnowledgeBase.load()
        self.knowledge = knowledge
        self._retrieval_thread = ThreadPoolExecutor(1, thread_name_prefix="dockwise-retrieval")
        self._explaining: dict[tuple[str, str, str], asyncio.Future[Reply]] = {}
        self._explainer = explainer
        self.admission = admission if admission is not None else Admission(get_settings())
        self.explain_timeout = (
            explain_timeout if explain_timeout is not None else get_settings().explain_timeout
        )

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

    def full_article(self, article_id: str) -> Reply:
        """The whole article ``article_id`` (the "Show full article" button, ``more``);
        an error reply for an id the knowledge base doesn't have."""
        if article_id not in self.knowledge.articles:
            return error_reply(f"I have no article {article_id[:80]!r}.")
        return self.knowledge.full_article(article_id)

    async def handle(self, text: str, *, asker: Asker = LOCAL) -> Reply:
        """Anything a user typed: a question, or a request to explain an image."""
        with bind_correlation_id(current_correlation_id()):
            try:
                special = parse_dockerfile_or_compare(text)
                if isinstance(special, DockerfileIntent):  # may be longer than a question
                    return await self.explain_dockerfile(special.text, asker=asker)
                if isinstance(special, CompareIntent) and len(text) <= MAX_INPUT_CHARS:
                    return await self.compare(special.a, special.b, asker=asker)
                cleaned = check_input(text)
                intent = parse_intent(cleaned)
                if isinstance(intent, ExplainIntent):
                    return await self.explain(intent.reference, asker=asker)
                if asker.platform == LOCAL.platform:  # one person at a terminal: no limits
                    reply = await self._answer(cleaned)
                else:
                    async with self.admission.question(asker.platform, asker.user, asker.channel):
                        reply = await self._answer(cleaned)
            except DockwiseError as exc:
                ERRORS.labels(kind=exc.kind).inc()
                log.info("question refused", platform=asker.platform, reason=exc.kind)
                return error_reply(str(exc))
            count_question(str(reply.kind))
            log.info(
                "question answered",
                platform=asker.platform,
                kind=str(reply.kind),
                topic=reply.topic,
            )
            return reply

    async def _share(self, key: tuple[str, str, str], work: Awaitable[Reply]) -> Reply:
        """Run ``work`` as the one in-flight explanation for ``key`` while it lasts."""
        task = asyncio.ensure_future(work)
        self._explaining[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._explaining.pop(key, None)
            else:  # our caller was cancelled: leave it to finish for the others
                task.add_done_callback(lambda _t: self._explaining.pop(key, None))

    async def _answer(self, question: str) -> Reply:
        """Retrieval is CPU work (a few ms): run it on one worker thread so a burst of
        questions never stalls the event loop (Slack wants acks within 3 s). One thread,
        because the stemmer is not safe to share between threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._retrieval_thread, self.knowledge.answer, question)

    async def explain(
        self,
        reference: str,
        *,
        source: Literal["auto", "registry", "docker"] = "auto",
        platform: Platform | None = None,
        asker: Asker = LOCAL,
    ) -> Reply:
        pair = parse_dockerfile_or_compare(f"/image-explain {reference.strip()}")
        if isinstance(pair, CompareIntent):  # "/image-explain A vs B" in any adapter
            return await self.compare(pair.a, pair.b, source=source, platform=platform, asker=asker)
        title = f"Couldn't explain {reference.strip()[:100]}"
        with bind_correlation_id(current_correlation_id()):
            try:
                ref = check_input(reference)

                async def work() -> Reply:
                    with track_explanation(source):
                        return await with_timeout(
                            self.explainer.explain(ref, source=source, platform=platform),
                            self.explain_timeout,
                            f"explaining {ref[:100]}",
                        )

                key = (ref, source, str(platform))
                running = self._explaining.get(key)
                if running is not None:
                    # The same image is being explained for someone else: share that
                    # result instead of taking (or being refused) a slot of our own.
                    reply = await asyncio.shield(running)
                elif asker.platform == LOCAL.platform:
                    reply = await self._share(key, work())
                else:
                    async with self.admission.explanation(
                        asker.platform, asker.user, asker.channel
                    ):
                        reply = await self._share(key, work())
            except DockwiseError as exc:
                log.info("explanation failed", platform=asker.platform, reason=exc.kind)
                return error_reply(str(exc), title=title)
            log.info("image explained", platform=asker.platform, source=source)
            return reply

    async def explain_dockerfile(
        self,
        text: str,
        *,
        inspect_bases: bool = True,
        source: Literal["auto", "registry", "docker"] = "auto",
        asker: Asker = LOCAL,
    ) -> Reply:
        """Explain a Dockerfile (at most 64 KB of UTF-8 text): stages, final image, hadolint
        and dockwise findings, and (``inspect_bases``) a one-line summary of each base image
        read by the explainer, whose real facts the base findings are checked against.
        ``data`` holds ``{"stages", "findings", "final_stage"}``; bad input gives an ERROR
        reply with one line."""
        from bot.dockerfile_explain import explain_dockerfile

        title = "Couldn't explain that Dockerfile"
        with bind_correlation_id(current_correlation_id()):
            facts_for = None
            if inspect_bases:

                async def facts_for(ref: str, platform: str | None) -> ImageFacts:
                    from bot.image.source import Platform

                    try:
                        chosen = Platform.parse(platform) if platform else None
                    except ValueError as exc:
                        raise InvalidInput(str(exc)) from None
                    return await with_timeout(
                        self.explainer.facts(ref, source=source, platform=chosen),
                        self.explain_timeout,
                        f"inspecting the base {ref[:100]}",
                    )

            try:
                work = explain_dockerfile(text, facts_for=facts_for)
                if asker.platform == LOCAL.platform or not inspect_bases:
                    reply = await work
                else:
                    async with self.admission.explanation(
                        asker.platform, asker.user, asker.channel
                    ):
                        reply = await work
            except DockwiseError as exc:
                log.info("dockerfile refused", platform=asker.platform, reason=exc.kind)
                return error_reply(str(exc), title=title)
            log.info("dockerfile explained", platform=asker.platform)
            return reply

    async def compare(
        self,
        a: str,
        b: str,
        *,
        source: Literal["auto", "registry", "docker"] = "auto",
        platform: Platform | None = None,
        asker: Asker = LOCAL,
    ) -> Reply:
        """Compare two images side by side (both read concurrently, shared layers once).
        ``data`` holds ``{"a", "b", "shared_layers", "shared_bytes", "packages"}``; failures
        give an ERROR reply with one line."""
        from bot.image.compare import compare_images

        title = f"Couldn't compare {a.strip()[:60]} and {b.strip()[:60]}"
        with bind_correlation_id(current_correlation_id()):
            try:
                ref_a, ref_b = check_input(a), check_input(b)
                work = with_timeout(
                    compare_images(self.explainer, ref_a, ref_b, source=source, platform=platform),
                    self.explain_timeout,
                    f"comparing {ref_a[:60]} and {ref_b[:60]}",
                )
                if asker.platform == LOCAL.platform:
                    reply = await work
                else:
                    async with self.admission.explanation(
                        asker.platform, asker.user, asker.channel
                    ):
                        reply = await work
            except DockwiseError as exc:
                log.info("comparison failed", platform=asker.platform, reason=exc.kind)
                return error_reply(str(exc), title=title)
            log.info("images compared", platform=asker.platform, source=source)
            return reply

    async def aclose(self) -> None:
        self._retrieval_thread.shutdown(wait=False)
        if self._explainer is not None:
            await self._explainer.aclose()
