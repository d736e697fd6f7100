"""The answer engine: one entry point for every adapter.

Adapters call ``await engine.handle(text)`` for anything a user typed (a question, or
"explain IMAGE"), or ``await engine.explain(ref)`` for an explicit image command. Both
always return a ``Reply``; user-caused failures become ``ReplyKind.ERROR`` replies with a
one-line message, never exceptions or tracebacks.

Replies carry their buttons (``Reply.actions``, made by ``bot.actions.with_actions``); a
click comes back as ``await engine.action(action_id, value, asker=...)``. Explanations
report progress to an optional ``progress`` callback (``bot.progress``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from bot.actions import DOCKERFILE_SUBJECT, UNCOVERED_SUBJECT, VOTES, split_value, with_actions
from bot.cache.share import Shared
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
    count_feedback,
    count_question,
    current_correlation_id,
    get_logger,
    track_explanation,
)
from bot.progress import ExplainProgress, ProgressCallback, human_bytes
from bot.reply import (
    ACTION_ASK,
    ACTION_FEEDBACK,
    ACTION_FULL_ARTICLE,
    ACTION_SECTION,
    Reply,
    ReplyKind,
)

if TYPE_CHECKING:
    from bot.dockerfile_explain import FactsLookup
    from bot.image.explain import Explainer
    from bot.image.facts import ImageFacts
    from bot.image.source import Platform
    from bot.jobs import JobQueue
    from bot.knowledge import KnowledgeBase

MAX_INPUT_CHARS = 4000
#: Image replies kept for section buttons and autocomplete, per process.
RECENT_IMAGES = 64
#: At most this many autocomplete choices (the chat platforms' limit).
MAX_CHOICES = 25
#: Well-known official images offered by autocomplete, most asked-about first.
WELL_KNOWN_IMAGES = (
    "alpine",
    "alpine:3.20",
    "busybox",
    "debian:bookworm-slim",
    "ubuntu:24.04",
    "python:3.12-slim",
    "python:3.12-alpine",
    "node:22-slim",
    "node:22-alpine",
    "golang:1.23",
    "eclipse-temurin:21-jre",
    "rust:1-slim",
    "ruby:3.3-slim",
    "php:8.3-apache",
    "nginx",
    "nginx:alpine",
    "httpd",
    "redis:7",
    "postgres:16",
    "mysql:8",
    "mongo:7",
    "registry:2",
    "traefik",
    "gcr.io/distroless/static-debian12",
    "amazonlinux:2023",
    "fedora",
)
log = get_logger("dockwise.engine")


def error_reply(message: str, *, title: str = "Sorry, I couldn't do that") -> Reply:
    return Reply(kind=ReplyKind.ERROR, title=title, body=message)


def check_input(text: str) -> str:
    """Strip and validate user text; raises InvalidInput with a one-line message. Bytes
    that were not valid UTF-8 (lone surrogates from a terminal's argv or stdin) become
    U+FFFD, so no later stage meets text it cannot encode."""
    cleaned = text.encode("utf-8", "replace").decode("utf-8").strip()
    if not cleaned:
        raise InvalidInput('Empty question: ask me about containers, e.g. "why FROM ubuntu?"')
    if len(cleaned) > MAX_INPUT_CHARS:
        raise InvalidInput(
            f"That message is {len(cleaned):,} characters; I read at most {MAX_INPUT_CHARS:,}."
        )
    return cleaned


@dataclass(frozen=True, slots=True)
class Asker:
    """Who is asking, for rate limits: platform (the adapter's name, "shell"), user, channel,
    and the team (workspace or server) for suggestions shared by its members."""

    platform: str
    user: str
    channel: str | None = None
    team: str | None = None


LOCAL = Asker("shell", "local")


def _check_reference(reference: str) -> None:
    """Raise InvalidReference (one line) for what no worker could explain: not an image
    ID and not a valid ``[registry/]repository[:tag][@digest]`` once pasted forms are
    undone (``from_paste``, as the explainer reads it). No I/O."""
    from bot.image.reference import (
        from_paste,
        is_full_image_id,
        looks_like_image_id,
        parse_reference,
    )

    pasted = from_paste(reference)
    if not (looks_like_image_id(pasted) or is_full_image_id(pasted)):
        parse_reference(pasted)


def compare_work(
    explainer: Explainer,
    a: str,
    b: str,
    *,
    source: Literal["auto", "registry", "docker"] = "auto",
    platform: Platform | None = None,
    timeout: float,
    progress: ProgressCallback | None = None,
) -> Awaitable[Reply]:
    """``compare_images`` of ``a`` and ``b`` within ``timeout`` seconds (TimedOut "comparing
    A and B took longer than N s"): how ``Engine.compare`` and a queue worker's compare job
    both run it."""
    from bot.image.compare import compare_images

    return with_timeout(
        compare_images(explainer, a, b, source=source, platform=platform, progress=progress),
        timeout,
        f"comparing {a[:60]} and {b[:60]}",
    )


def base_facts_lookup(
    explainer: Explainer,
    *,
    source: Literal["auto", "registry", "docker"] = "auto",
    timeout: float,
    progress: ProgressCallback | None = None,
) -> FactsLookup:
    """The ``facts_for(ref, platform)`` of ``explain_dockerfile``: ``Explainer.facts`` of a
    base within ``timeout`` seconds (InvalidInput for a platform it cannot parse): how
    ``Engine.explain_dockerfile`` and a queue worker's Dockerfile job both read bases."""
    from bot.image.source import Platform

    async def facts_for(ref: str, platform: str | None) -> ImageFacts:
        try:
            chosen = Platform.parse(platform) if platform else None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        extra = {} if progress is None else {"progress": progress}
        return await with_timeout(
            explainer.facts(ref, source=source, platform=chosen, **extra),
            timeout,
            f"inspecting the base {ref[:100]}",
        )

    return facts_for


def _inspects_a_base(text: str) -> bool:
    """Whether the Dockerfile ``text`` has a FROM base image to inspect (not only
    ``scratch`` or earlier stages). Raises InvalidInput as ``explain_dockerfile`` does."""
    from bot.dockerfile_explain import decode_dockerfile, parse_dockerfile

    return any(s.kind == "image" for s in parse_dockerfile(decode_dockerfile(text)).stages)


class Engine:
    def __init__(
        self,
        knowledge: KnowledgeBase | None = None,
        explainer: Explainer | None = None,
        admission: Admission | None = None,
        explain_timeout: float | None = None,
        jobs: JobQueue | None = None,
    ) -> None:
        """``jobs``: explain images through this job queue (``bot.jobs``, the web and
        gateway roles) instead of in this process."""
        from bot.config import get_settings

        if knowledge is None:
            from bot.knowledge import KnowledgeBase  # numpy and the embedding model: load late

            knowledge = KnowledgeBase.load()
        self.knowledge = knowledge
        self._retrieval_thread = ThreadPoolExecutor(1, thread_name_prefix="dockwise-retrieval")
        # one explanation per (image, source, platform) in flight, shared by its askers
        self._explaining: Shared[tuple[str, str, str], Reply] = Shared("explain")
        self._recent: OrderedDict[str, Reply] = OrderedDict()  # image ref -> its reply
        self._recent_by_team: dict[str, OrderedDict[str, None]] = {}
        self._explainer = explainer
        self.jobs = jobs
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
            return with_actions(self.knowledge.answer(check_input(question)), self.knowledge)
        except DockwiseError as exc:
            return error_reply(str(exc))

    async def handle(
        self, text: str, *, asker: Asker = LOCAL, progress: ProgressCallback | None = None
    ) -> Reply:
        """Anything a user typed: a question, a Dockerfile, two images to compare, or a
        request to explain an image (whose progress goes to ``progress``, see ``explain``)."""
        with bind_correlation_id(current_correlation_id()):
            try:
                special = parse_dockerfile_or_compare(text)
                if isinstance(special, DockerfileIntent):  # may be longer than a question
                    return await self.explain_dockerfile(special.text, asker=asker)
                if isinstance(special, CompareIntent) and len(text) <= MAX_INPUT_CHARS:
                    return await self.compare(special.a, special.b, asker=asker, progress=progress)
                cleaned = check_input(text)
                intent = parse_intent(cleaned)
                if isinstance(intent, ExplainIntent):
                    return await self.explain(intent.reference, asker=asker, progress=progress)
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
            return with_actions(reply, self.knowledge)

    async def _answer(self, question: str) -> Reply:
        """Retrieval is CPU work (a few ms): run it on one worker thread so a burst of
        questions never stalls the event loop (chat platforms want acks within 3 s). One thread,
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
        progress: ProgressCallback | None = None,
    ) -> Reply:
        """Explain an image ("A vs B" compares two); the reply carries section and feedback
        buttons.

        ``progress`` (called on the event loop) gets an ``ExplainProgress`` when the work
        starts and at each stage the explainer reports (lookup, each layer read).
        """
        pair = parse_dockerfile_or_compare(f"/image-explain {reference.strip()}")
        if isinstance(pair, CompareIntent):  # "/image-explain A vs B" in any adapter
            return await self.compare(
                pair.a, pair.b, source=source, platform=platform, asker=asker, progress=progress
            )
        title = f"Couldn't explain {reference.strip()[:100]}"
        with bind_correlation_id(current_correlation_id()):
            try:
                ref = check_input(reference)
                if progress is not None:
                    progress(ExplainProgress(ref))

                def relay(event: ExplainProgress) -> None:  # name the image as it was asked
                    if progress is not None:
                        progress(replace(event, image=ref))

                async def work() -> Reply:
                    with track_explanation(source):
                        extra = {} if progress is None else {"progress": relay}
                        if self.jobs is not None:  # a worker explains; the queue times out
                            _check_reference(ref)  # garbage never takes a queue slot
                            return await self.jobs.explain(
                                ref, source=source, platform=platform, **extra
                            )
                        return await with_timeout(
                            self.explainer.explain(ref, source=source, platform=platform, **extra),
                            self.explain_timeout,
                            f"explaining {ref[:100]}",
                        )

                key = (ref, source, str(platform))
                if key in self._explaining:
                    # The same image is being explained for someone else: share that
                    # result instead of taking (or being refused) a slot of our own.
                    reply = await self._explaining.join(key)
                elif asker.platform == LOCAL.platform:
                    reply = await self._explaining.run(key, work)
                else:
                    async with self.admission.explanation(
                        asker.platform, asker.user, asker.channel
                    ):
                        reply = await self._explaining.run(key, work)
            except DockwiseError as exc:
                log.info("explanation failed", platform=asker.platform, reason=exc.kind)
                return error_reply(str(exc), title=title)
            log.info("image explained", platform=asker.platform, source=source)
            if reply.kind is ReplyKind.IMAGE:
                self._remember(ref, reply, asker.team)
            return with_actions(reply, self.knowledge, image=ref)

    def later_reference(self, text: str) -> str | None:
        """The image reference when ``text`` (anything a user typed, read as ``handle``
        reads it) asks to explain one image and a job queue explains images
        (``self.jobs``): the adapter may then show its placeholder and hand the ask over
        with ``explain_later`` instead of waiting. None for everything ``handle`` answers
        itself: questions, Dockerfiles, comparisons, a malformed reference (``handle``
        replies with its error), and any ask when this process has no queue. No I/O."""
        if self.jobs is None:
            return None
        try:
            if parse_dockerfile_or_compare(text) is not None:
                return None
            intent = parse_intent(check_input(text))
            if not isinstance(intent, ExplainIntent):
                return None
            reference = check_input(intent.reference)
            _check_reference(reference)
        except DockwiseError:
            return None
        return reference

    async def explain_later(
        self,
        reference: str,
        *,
        asker: Asker,
        delivery_target: dict[str, Any],
        progress: ProgressCallback | None = None,
    ) -> Reply | None:
        """Explain an image for ``asker`` whose adapter can post the reply later to
        ``delivery_target`` (``ChatAdapter.deliver``; a JSON-ready dict). With a job queue
        (``self.jobs``) the ask is admitted like ``explain`` (rate limits, busy), attached
        to the image's job, and None is returned: the worker that finishes the job posts
        the reply (``bot.jobs.JobQueue.explain_later``). Without a queue, for "A vs B"
        comparisons, and for refusals (bad input, rate limit, busy queue) the reply to
        post now is returned, as ``explain`` would. "A vs B" is queued as a comparison
        (``JobQueue.compare_later``), its reply or error posted like ``compare``'s."""
        if self.jobs is None:
            return await self.explain(reference, asker=asker, progress=progress)
        from bot.jobs import Delivery

        delivery = Delivery(asker.platform, dict(delivery_target))
        pair = parse_dockerfile_or_compare(f"/image-explain {reference.strip()}")
        if isinstance(pair, CompareIntent):
            title = f"Couldn't compare {pair.a.strip()[:60]} and {pair.b.strip()[:60]}"
        else:
            title = f"Couldn't explain {reference.strip()[:100]}"
        try:
            if isinstance(pair, CompareIntent):
                ref_a, ref_b = check_input(pair.a), check_input(pair.b)
                _check_reference(ref_a)
                _check_reference(ref_b)  # garbage never takes a queue slot
                async with self.admission.explanation(asker.platform, asker.user, asker.channel):
                    await self.jobs.compare_later(ref_a, ref_b, delivery=delivery)
            else:
                ref = check_input(reference)
                async with self.admission.explanation(asker.platform, asker.user, asker.channel):
                    await self.jobs.explain_later(ref, delivery=delivery)
        except DockwiseError as exc:
            log.info("explanation refused", platform=asker.platform, reason=exc.kind)
            return error_reply(str(exc), title=title)
        log.info("explanation queued", platform=asker.platform)
        return None

    # --- buttons ------------------------------------------------------------------------

    async def action(self, action_id: str, value: str, *, asker: Asker = LOCAL) -> Reply:
        """A button click: ``action_id`` is one of the ``bot.reply.ACTION_*`` prefixes
        (a suffix such as ``_2`` or ``_up`` is ignored), ``value`` the button's value.
        Returns the reply to show (an error reply for an unknown action)."""
        for prefix, handler in (
            (ACTION_FULL_ARTICLE, self._full_article_action),
            (ACTION_ASK, self._ask_action),
            (ACTION_SECTION, self._section_action),
            (ACTION_FEEDBACK, self._feedback_action),
        ):
            if action_id == prefix or action_id.startswith(prefix + "_"):
                return await handler(value, asker)
        return error_reply(f"Unknown button {action_id[:60]!r}.")

    async def _full_article_action(self, value: str, asker: Asker) -> Reply:
        return self.full_article(value)

    async def _ask_action(self, value: str, asker: Asker) -> Reply:
        return await self.handle(value, asker=asker)

    async def _section_action(self, value: str, asker: Asker) -> Reply:
        return await self.section(value, asker=asker)

    async def _feedback_action(self, value: str, asker: Asker) -> Reply:
        return self.feedback(value, asker=asker)

    def full_article(self, article_id: str) -> Reply:
        """The whole article ``article_id`` (the "Show full article" button, ``more``,
        ``ask --full``); an error reply for an id the knowledge base doesn't have."""
        if article_id.strip() not in self.knowledge.articles:
            return error_reply(f"I have no article {article_id.strip()[:80]!r}.")
        return with_actions(self.knowledge.full_article(article_id.strip()), self.knowledge)

    async def section(self, value: str, *, asker: Asker = LOCAL) -> Reply:
        """One section of an image reply; ``value`` is ``<image ref>|<section title>``.
        Uses the reply explained recently, else explains the image again (layers cached)."""
        ref, title = split_value(value)
        if not ref.strip() or not title.strip():
            return error_reply("That button carries no image section.")
        reply = self._recent.get(ref)
        if reply is None:
            reply = await self.explain(ref, asker=asker)
            if reply.kind is ReplyKind.ERROR:
                return reply
        for section in reply.sections:
            if section.title == title:
                return Reply(
                    kind=ReplyKind.IMAGE,
                    title=f"{ref}: {section.title}",
                    body=section.body,
                    sources=list(reply.sources),
                )
        return error_reply(f"{ref} has no section {title[:80]!r} any more.")

    def feedback(self, value: str, *, asker: Asker = LOCAL) -> Reply:
        """Count a 👍/👎 (``up|<topic or image>``) in ``dockwise_feedback_total{kind,vote}``
        and log it (platform, kind, vote, subject; never message text). The subject must be
        one a button can carry (an article id, ``uncovered``, ``Dockerfile``, an image
        reference or ``A vs B``): anything else is refused and not counted."""
        vote, subject = split_value(value)
        if vote not in VOTES or not subject.strip():
            return error_reply("That feedback button is not one I made.")
        if subject in self.knowledge.articles:
            kind = str(ReplyKind.ANSWER)
        elif subject == UNCOVERED_SUBJECT:
            kind = str(ReplyKind.UNCOVERED)
        elif subject == DOCKERFILE_SUBJECT or self.check_reference(subject) is None:
            kind = str(ReplyKind.IMAGE)
        else:  # free text in a forged value: neither counted nor logged
            return error_reply("That feedback button is not one I made.")
        count_feedback(kind, vote)
        log.info("feedback", platform=asker.platform, kind=kind, vote=vote, subject=subject[:200])
        thanks = "Thanks, glad it helped!" if vote == "up" else "Thanks, noted: I'll improve."
        return Reply(kind=ReplyKind.FALLBACK, title="Thanks for the feedback", body=thanks)

    # --- images: suggestions, checks, summaries ------------------------------------------

    def _remember(self, ref: str, reply: Reply, team: str | None) -> None:
        self._recent[ref] = reply
        self._recent.move_to_end(ref)
        while len(self._recent) > RECENT_IMAGES:
            self._recent.popitem(last=False)
        if team is not None:
            refs = self._recent_by_team.setdefault(team, OrderedDict())
            refs[ref] = None
            refs.move_to_end(ref)
            while len(refs) > RECENT_IMAGES:
                refs.popitem(last=False)

    def image_choices(self, typed: str, *, team: str | None = None) -> list[str]:
        """At most 25 image references for autocomplete: those explained recently in
        ``team`` (newest first), then well-known official images, keeping the ones that
        contain what was typed (case-insensitive)."""
        needle = typed.strip().lower()
        recent = list(reversed(self._recent_by_team.get(team or "", {})))
        out: list[str] = []
        for ref in [*recent, *WELL_KNOWN_IMAGES]:
            if needle in ref.lower() and ref not in out and len(ref) <= 100:
                out.append(ref)
            if len(out) >= MAX_CHOICES:
                break
        return out

    def check_reference(self, reference: str) -> Reply | None:
        """An error reply if ``reference`` cannot be an image reference, else None (cheap:
        no I/O, so adapters can refuse privately before showing a public placeholder)."""
        from bot.image.reference import from_paste, looks_like_image_id, parse_reference

        try:
            text = check_input(reference)
            pair = parse_dockerfile_or_compare(f"/image-explain {text}")
            for one in [pair.a, pair.b] if isinstance(pair, CompareIntent) else [text]:
                pasted = from_paste(one)  # Hub URLs, chat links, `docker pull ...`
                if not looks_like_image_id(pasted):
                    parse_reference(pasted)
        except DockwiseError as exc:
            return error_reply(str(exc), title=f"Couldn't explain {reference.strip()[:100]}")
        return None

    async def summarize(self, reference: str) -> Reply:
        """A one-line summary of an image from its registry manifest and config only (no
        layer is downloaded): platform, layers, compressed size, user, entrypoint."""
        from bot.image.explain import default_platform

        title = f"Couldn't look up {reference.strip()[:100]}"
        try:
            ref = check_input(reference)
            resolved = await with_timeout(
                self.explainer.source("registry").resolve(ref, default_platform()),
                self.explain_timeout,
                f"looking up {ref[:100]}",
            )
        except DockwiseError as exc:
            return error_reply(str(exc), title=title)
        config = resolved.config.get("config") or {}
        size = sum(blob.size or 0 for blob in resolved.layers)
        parts = [
            str(resolved.platform),
            f"{len(resolved.layers)} layers",
            f"{human_bytes(size)} compressed",
            f"user {config.get('User') or 'root'}",
        ]
        command = config.get("Entrypoint") or config.get("Cmd")
        if command:
            parts.append("runs `" + " ".join(str(c) for c in command)[:80] + "`")
        created = str(resolved.config.get("created") or "")[:10]
        if created:
            parts.append(f"built {created}")
        return Reply(
            kind=ReplyKind.IMAGE,
            title=ref,
            body=" · ".join(parts),
            data={"reference": resolved.reference, "digest": resolved.digest},
        )

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
            try:
                work: Awaitable[Reply]
                if self.jobs is not None and inspect_bases and _inspects_a_base(text):
                    # A worker reads the bases (their layers) and lints: one queue job.
                    work = self.jobs.dockerfile(text, source=source)
                else:
                    facts_for = None
                    if inspect_bases:
                        facts_for = base_facts_lookup(
                            self.explainer, source=source, timeout=self.explain_timeout
                        )
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
            return with_actions(reply, self.knowledge, subject=DOCKERFILE_SUBJECT)

    async def compare(
        self,
        a: str,
        b: str,
        *,
        source: Literal["auto", "registry", "docker"] = "auto",
        platform: Platform | None = None,
        asker: Asker = LOCAL,
        progress: ProgressCallback | None = None,
    ) -> Reply:
        """Compare two images side by side (both read concurrently, shared layers once).
        ``data`` holds ``{"a", "b", "shared_layers", "shared_bytes", "packages"}``; failures
        give an ERROR reply with one line. With a job queue (``self.jobs``) a worker
        compares (``JobQueue.compare``: one job per pair, its progress relayed to
        ``progress``); in one process ``progress`` is not called."""
        title = f"Couldn't compare {a.strip()[:60]} and {b.strip()[:60]}"
        with bind_correlation_id(current_correlation_id()):
            try:
                ref_a, ref_b = check_input(a), check_input(b)
                work: Awaitable[Reply]
                if self.jobs is not None:
                    _check_reference(ref_a)
                    _check_reference(ref_b)  # garbage never takes a queue slot
                    extra = {} if progress is None else {"progress": progress}
                    work = self.jobs.compare(
                        ref_a, ref_b, source=source, platform=platform, **extra
                    )
                else:
                    work = compare_work(
                        self.explainer,
                        ref_a,
                        ref_b,
                        source=source,
                        platform=platform,
                        timeout=self.explain_timeout,
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
            pair = f"{ref_a} vs {ref_b}"
            if reply.kind is ReplyKind.IMAGE:
                self._remember(pair, reply, None)  # its section buttons open from here
            return with_actions(reply, self.knowledge, image=pair)

    async def aclose(self) -> None:
        self._retrieval_thread.shutdown(wait=False)
        if self._explainer is not None:
            await self._explainer.aclose()
