"""Image references found in chat text and links, the buttons the engine attaches, and the
engine's click handling (no platform involved)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from bot.actions import element_ids, with_actions
from bot.engine import Engine
from bot.knowledge import KnowledgeBase
from bot.links import find_image_reference, image_from_url
from bot.reply import Reply, ReplyKind, Section


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(knowledge=KnowledgeBase.load())


@pytest.mark.parametrize(
    ("url", "reference"),
    [
        ("https://hub.docker.com/_/python", "python"),
        ("https://hub.docker.com/_/nginx/tags?name=1.27-alpine", "nginx:1.27-alpine"),
        ("https://hub.docker.com/r/bitnami/redis", "bitnami/redis"),
        ("https://hub.docker.com/r/bitnami/redis/tags?page=1&name=7.2", "bitnami/redis:7.2"),
        ("https://ghcr.io/acme/api", "ghcr.io/acme/api"),
        (
            "https://quay.io/repository/prometheus/node-exporter?tab=tags",
            "quay.io/prometheus/node-exporter",
        ),
        ("https://quay.io/prometheus/node-exporter", "quay.io/prometheus/node-exporter"),
        ("https://hub.docker.com/search?q=python", None),
        ("https://ghcr.io/acme", None),
        ("https://quay.io/search", None),
        ("https://example.com/_/python", None),
        ("not a url", None),
    ],
)
def test_registry_links_become_references(url: str, reference: str | None) -> None:
    assert image_from_url(url) == reference


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("we run `docker pull python:3.12-slim` in CI", "python:3.12-slim"),
        ("docker run --rm -it alpine:3.20 sh", "alpine:3.20"),
        ("FROM node:22-alpine AS build\nRUN npm ci", "node:22-alpine"),
        ("    image: postgres:16\n    ports: [5432]", "postgres:16"),
        ("is ghcr.io/acme/api:1.2 too big?", "ghcr.io/acme/api:1.2"),
        ("see <https://hub.docker.com/_/redis>", "redis"),
        ("can you explain nginx", "nginx"),
        ("lunch at 12:30?", None),
        ("why is my container slow", None),
        ("FROM scratch", None),
    ],
)
def test_first_image_reference_in_a_message(text: str, reference: str | None) -> None:
    assert find_image_reference(text) == reference


def test_answer_buttons(engine: Engine) -> None:
    reply = engine.ask("why do Dockerfiles start FROM ubuntu?")
    article = engine.knowledge.articles["why-base-image"]
    ids = [(i, a.value) for i, a in element_ids(reply.actions)]
    assert ids[0] == ("dockwise_full_article", "why-base-image")
    asks = [(i, v) for i, v in ids if i.startswith("dockwise_ask")]
    questions = [engine.knowledge.articles[r].questions[0] for r in article.related][:3]
    assert asks == list(
        zip(["dockwise_ask", "dockwise_ask_2", "dockwise_ask_3"], questions, strict=False)
    )
    assert ids[-2:] == [
        ("dockwise_feedback_up", "up|why-base-image"),
        ("dockwise_feedback_down", "down|why-base-image"),
    ]


def test_full_article_reply_has_no_full_article_button(engine: Engine) -> None:
    reply = engine.full_article("why-base-image")
    assert reply.kind is ReplyKind.ANSWER
    assert reply.body == engine.knowledge.articles["why-base-image"].body
    assert "dockwise_full_article" not in [a.action_id for a in reply.actions]
    assert engine.full_article("no-such-article").kind is ReplyKind.ERROR


def test_image_and_error_buttons() -> None:
    image = Reply(
        kind=ReplyKind.IMAGE,
        title="t",
        body="b",
        sections=[Section("Layers", "x"), Section("Advice", "y")],
    )
    with_actions(image, image="nginx:1")
    assert [(i, a.value) for i, a in element_ids(image.actions)] == [
        ("dockwise_section", "nginx:1|Layers"),
        ("dockwise_section_2", "nginx:1|Advice"),
        ("dockwise_feedback_up", "up|nginx:1"),
        ("dockwise_feedback_down", "down|nginx:1"),
    ]
    error = with_actions(Reply(kind=ReplyKind.ERROR, title="t", body="b", topic="x"))
    assert error.actions == []
    uncovered = with_actions(
        Reply(kind=ReplyKind.UNCOVERED, title="t", body="b", suggestions=["is a VM a container?"])
    )
    assert [(i, a.value) for i, a in element_ids(uncovered.actions)] == [
        ("dockwise_ask", "is a VM a container?"),
        ("dockwise_feedback_up", "up|uncovered"),
        ("dockwise_feedback_down", "down|uncovered"),
    ]


async def test_clicks_through_the_engine(engine: Engine) -> None:
    ask = await engine.action("dockwise_ask_3", "is a container a VM?")
    assert ask.title == engine.ask("is a container a VM?").title
    unknown = await engine.action("dockwise_nope", "x")
    assert unknown.kind is ReplyKind.ERROR
    bad_vote = await engine.action("dockwise_feedback_up", "sideways|why-base-image")
    assert bad_vote.kind is ReplyKind.ERROR
    before = REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": "answer", "vote": "up"})
    thanks = await engine.action("dockwise_feedback_up", "up|why-base-image")
    assert thanks.kind is not ReplyKind.ERROR and thanks.actions == []
    after = REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": "answer", "vote": "up"})
    assert after == (before or 0) + 1
    uncovered_before = REGISTRY.get_sample_value(
        "dockwise_feedback_total", {"kind": "uncovered", "vote": "down"}
    )
    await engine.action("dockwise_feedback_down", "down|uncovered")
    assert (
        REGISTRY.get_sample_value("dockwise_feedback_total", {"kind": "uncovered", "vote": "down"})
        == (uncovered_before or 0) + 1
    )
    no_section = await engine.action("dockwise_section", "no-bar-here")
    assert no_section.kind is ReplyKind.ERROR


def test_image_choices_filter_and_cap(engine: Engine) -> None:
    assert len(engine.image_choices("")) == 25
    assert engine.image_choices("ALPINE")[:2] == ["alpine", "alpine:3.20"]
    assert all("python" in c for c in engine.image_choices("python"))
    assert engine.image_choices("no-such-image-anywhere") == []
