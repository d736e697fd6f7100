"""The answer engine on the real knowledge base: quality thresholds, fallback, routing."""

from __future__ import annotations

import pytest

from bench._common import EVAL, load_qa
from bot.engine import MAX_INPUT_CHARS, Engine
from bot.intent import ExplainIntent, QuestionIntent, parse_intent
from bot.knowledge import FALLBACK_TITLE, KnowledgeBase
from bot.reply import Reply, ReplyKind


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase.load()


# Floors a little under what the eval split gives today (bench/qa_eval.py prints the
# figures); the held-out split is never asserted on, so it stays unseen.
TOP1_FLOOR, FALLBACK_FLOOR, UNCOVERED_FLOOR = 0.93, 0.97, 0.88


def test_eval_split_routes_on_topic_questions_to_the_right_article(kb: KnowledgeBase) -> None:
    qa = load_qa(EVAL)
    assert len(qa.on_topic) >= 200
    misses = [(q, e, kb.answer(q).topic) for q, e in qa.on_topic if kb.answer(q).topic != e]
    accuracy = 1 - len(misses) / len(qa.on_topic)
    assert accuracy >= TOP1_FLOOR, f"top-1 {accuracy:.1%}; misses: {misses}"


def test_off_topic_questions_get_the_fallback(kb: KnowledgeBase) -> None:
    qa = load_qa(EVAL)
    assert len(qa.off_topic) >= 60
    answered = [(q, kb.answer(q).kind) for q in qa.off_topic]
    wrong = [(q, k) for q, k in answered if k is not ReplyKind.FALLBACK]
    rate = 1 - len(wrong) / len(qa.off_topic)
    assert rate >= FALLBACK_FLOOR, f"fallback rate {rate:.1%}; not refused: {wrong}"


def test_uncovered_container_questions_are_said_to_be_uncovered(kb: KnowledgeBase) -> None:
    qa = load_qa(EVAL)
    assert len(qa.uncovered) >= 20
    wrong = [(q, kb.answer(q).kind) for q in qa.uncovered]
    wrong = [(q, k) for q, k in wrong if k is not ReplyKind.UNCOVERED]
    rate = 1 - len(wrong) / len(qa.uncovered)
    assert rate >= UNCOVERED_FLOOR, f"uncovered rate {rate:.1%}; wrong: {wrong}"


def test_uncovered_reply_links_a_docs_search_and_never_answers(kb: KnowledgeBase) -> None:
    reply = kb.answer("how do I set up docker swarm with three manager nodes")
    assert reply.kind is ReplyKind.UNCOVERED
    assert reply.topic is None and reply.article is None
    assert reply.sources and reply.sources[0].url.startswith("https://docs.docker.com/search/")
    assert 1 <= len(reply.related) <= 3
    assert reply.suggestions == [kb.articles[a].question for a in reply.related]


def test_answer_is_the_lead_and_the_best_section_within_200_words(kb: KnowledgeBase) -> None:
    reply = kb.answer("what does exit code 137 mean for my container")
    article = kb.articles["container-exits"]
    assert reply.topic == "container-exits" and reply.article == article.body
    assert reply.section == "Reading the exit code"
    assert reply.body.startswith(article.lead)
    assert len(reply.body.split()) <= 200
    other = kb.answer("docker run -d ubuntu exits immediately, why?")
    assert other.topic == "container-exits" and other.section != reply.section


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
