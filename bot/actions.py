"""The buttons under a reply, made in one place for every adapter.

``with_actions(reply, knowledge, image=...)`` fills ``Reply.actions``; adapters only render
them (as each platform's buttons) and send a click back to the engine with the
action's ``action_id`` prefix and ``value``:

- ``dockwise_full_article`` (value: article id) on an answer that shows part of an article;
- ``dockwise_ask`` (value: the question), at most 3 follow-ups from the related articles
  (or the reply's suggestions when it has no related articles);
- ``dockwise_section`` (value: ``<image ref>|<section title>``), one per image section;
- ``dockwise_feedback`` (value: ``up|<topic or image>`` / ``down|...``) on every answer
  and image reply: a comparison's subject is ``A vs B``, a Dockerfile explanation's
  ``Dockerfile`` (``DOCKERFILE_SUBJECT``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.reply import (
    ACTION_ASK,
    ACTION_FEEDBACK,
    ACTION_FULL_ARTICLE,
    ACTION_SECTION,
    Action,
    Reply,
    ReplyKind,
)

if TYPE_CHECKING:
    from bot.knowledge import KnowledgeBase

MAX_FOLLOW_UPS = 3
#: Every value stays under 2,000 characters (the smallest button value limit of the platforms).
MAX_VALUE = 2000
VOTES = ("up", "down")
FEEDBACK_LABELS = {"up": "👍", "down": "👎"}
UNCOVERED_SUBJECT = "uncovered"
#: The feedback subject of a Dockerfile explanation (its text is never put in a value).
DOCKERFILE_SUBJECT = "Dockerfile"
FEEDBACK_KINDS = (str(ReplyKind.ANSWER), str(ReplyKind.UNCOVERED), str(ReplyKind.IMAGE))


def _shows_whole_article(reply: Reply) -> bool:
    return reply.article is not None and reply.body.strip() == reply.article.strip()


def follow_up_questions(reply: Reply, knowledge: KnowledgeBase | None) -> list[str]:
    """Up to 3 questions to offer next: the first question of each related article,
    else the reply's own suggestions."""
    questions: list[str] = []
    if knowledge is not None:
        for article_id in reply.related:
            article = knowledge.articles.get(article_id)
            if article is not None and article.questions:
                questions.append(article.questions[0])
    if not questions:
        questions = [s for s in reply.suggestions if s.strip()]
    unique = list(dict.fromkeys(q.strip() for q in questions if len(q.strip()) <= MAX_VALUE))
    return unique[:MAX_FOLLOW_UPS]


def with_actions(
    reply: Reply,
    knowledge: KnowledgeBase | None = None,
    *,
    image: str | None = None,
    subject: str | None = None,
) -> Reply:
    """``reply`` with its buttons (replacing any it had); returns the same object.

    ``image`` is the reference an image reply explains (its sections' buttons carry it;
    ``A vs B`` for a comparison). ``subject`` names what an image reply's feedback is
    about when it explains no image (``DOCKERFILE_SUBJECT``); it adds no section buttons.
    Error replies get no buttons.
    """
    actions: list[Action] = []
    if reply.kind is ReplyKind.ERROR:
        reply.actions = []
        return reply
    if reply.kind is ReplyKind.ANSWER and reply.topic and not _shows_whole_article(reply):
        actions.append(Action(ACTION_FULL_ARTICLE, "Show full article", reply.topic))
    if reply.kind is not ReplyKind.IMAGE:
        for question in follow_up_questions(reply, knowledge):
            actions.append(Action(ACTION_ASK, question, question))
    if reply.kind is ReplyKind.IMAGE and image:
        for section in reply.sections:
            value = f"{image}|{section.title}"
            if len(value) <= MAX_VALUE:
                actions.append(Action(ACTION_SECTION, section.title, value))
    about = (image or subject) if reply.kind is ReplyKind.IMAGE else reply.topic
    if reply.kind is ReplyKind.UNCOVERED and not about:
        about = UNCOVERED_SUBJECT  # no topic: the vote still says how "not covered" felt
    if str(reply.kind) in FEEDBACK_KINDS and about:
        for vote in VOTES:
            value = f"{vote}|{about}"
            if len(value) <= MAX_VALUE:
                actions.append(Action(ACTION_FEEDBACK, FEEDBACK_LABELS[vote], value))
    reply.actions = actions
    return reply


def split_value(value: str) -> tuple[str, str]:
    """``"a|b|c"`` -> ``("a", "b|c")``: a section or feedback value's two parts."""
    head, _, tail = value.partition("|")
    return head, tail


def element_ids(actions: list[Action]) -> list[tuple[str, Action]]:
    """Each action with an id unique among ``actions``: the prefix for the first of its
    kind, then ``_2``, ``_3``…; feedback buttons are ``dockwise_feedback_up`` / ``_down``
    (chat platforms refuse two equal button ids in one message)."""
    out: list[tuple[str, Action]] = []
    seen: dict[str, int] = {}
    for action in actions:
        if action.action_id == ACTION_FEEDBACK:
            element_id = f"{action.action_id}_{split_value(action.value)[0]}"
        else:
            count = seen[action.action_id] = seen.get(action.action_id, 0) + 1
            element_id = action.action_id if count == 1 else f"{action.action_id}_{count}"
        out.append((element_id, action))
    return out
