"""The answer engine on the real knowledge base: quality thresholds, fallback, routing."""

from __future__ import annotations

import pytest

from bench._common import EVAL, load_set
from bot.engine import MAX_INPUT_CHARS, Engine
from bot.intent import ExplainIntent, QuestionIntent, parse_intent
from bot.knowledge import FALLBACK_TITLE, KnowledgeBase
from bot.reply import Reply, ReplyKind


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


def test_eval_set_top1_accuracy_at_least_90_percent(kb: KnowledgeBase) -> None:
    on, _ = load_set(EVAL)
    assert len(on) >= 80
    misses = []
    for question, expected in on:
        reply = kb.answer(question)
        if reply.topic != expected:
            misses.append((question, expected, reply.topic))
    accuracy = 1 - len(misses) / len(on)
    assert accuracy >= 0.90, f"top-1 {accuracy:.1%}; misses: {misses}"


def test_off_topic_questions_get_the_fallback(kb: KnowledgeBase) -> None:
    _, off = load_set(EVAL)
    assert len(off) >= 15
    answered = [(q, kb.answer(q).topic) for q in off if kb.answer(q).kind is not ReplyKind.FALLBACK]
    rate = 1 - len(answered) / len(off)
    assert rate >= 0.90, f"fallback rate {rate:.1%}; answered: {answered}"


def test_fallback_says_what_dockwise_does_and_names_no_article(kb: KnowledgeBase) -> None:
    reply = kb.answer("what's a good lasagne recipe?")
    assert reply.kind is ReplyKind.FALLBACK
    assert reply.title == FALLBACK_TITLE
    assert reply.topic is None and reply.sources == []
    assert "explain" in reply.body and "container" in reply.body.lower()


def test_answer_carries_article_sources_and_related(kb: KnowledgeBase) -> None:
    reply = kb.answer("why do dockerfiles start with FROM ubuntu?")
    article = kb.articles["why-base-image"]
    assert reply.kind is ReplyKind.ANSWER and reply.topic == "why-base-image"
    assert reply.title == article.title
    assert [s.url for s in reply.sources] == [s.url for s in article.sources]
    assert reply.related and all(r in kb.articles for r in reply.related)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("explain nginx", "nginx"),
        ("Explain python:3.12-slim", "python:3.12-slim"),
        (
            "explain the image ghcr.io/org/app@sha256:" + "a" * 64,
            "ghcr.io/org/app@sha256:" + "a" * 64,
        ),
        ("what's in debian:bookworm?", "debian:bookworm"),
        ("what is inside `localhost:5000/app:1.0`", "localhost:5000/app:1.0"),
        ("inspect alpine", "alpine"),
    ],
)
def test_image_requests_route_to_explain(text: str, expected: str) -> None:
    assert parse_intent(text) == ExplainIntent(expected)


@pytest.mark.parametrize(
    "text",
    [
        "explain layers",
        "explain containers",
        "why FROM ubuntu?",
        "what's in a base image?",
        "explain it",
        "explain the difference between cmd and entrypoint",
    ],
)
def test_questions_are_not_image_requests(text: str) -> None:
    assert isinstance(parse_intent(text), QuestionIntent)


async def test_handle_rejects_empty_and_oversized_input_with_one_line(kb: KnowledgeBase) -> None:
    engine = Engine(knowledge=kb)
    for text in ["", "   \n ", "x" * (MAX_INPUT_CHARS + 1)]:
        reply = await engine.handle(text)
        assert reply.kind is ReplyKind.ERROR
        assert "\n" not in reply.body and reply.body
    ok = await engine.handle("y" * 10 + " is a container a vm?")
    assert ok.kind is not ReplyKind.ERROR


async def test_retrieval_runs_off_the_event_loop_thread(kb: KnowledgeBase) -> None:
    """A burst of questions must not block the loop that acks Slack/Discord events."""
    import threading

    from bot.engine import Asker

    seen: list[int] = []

    class Recording(KnowledgeBase):
        def answer(self, question: str) -> Reply:
            seen.append(threading.get_ident())
            return super().answer(question)

    engine = Engine(knowledge=Recording(list(kb.articles.values())))
    try:
        for asker in (Asker("slack", "U1", "C1"), Asker("shell", "local")):
            reply = await engine.handle("is a container a VM?", asker=asker)
            assert reply.topic == "containers-vs-vms"
    finally:
        await engine.aclose()
    assert len(seen) == 2 and threading.get_ident() not in seen
