"""The knowledge base: Markdown articles with front matter, and answering from them.

An article (``knowledge/<id>.md``) is a lead paragraph that answers its one main question
(front matter ``question``), then ``## `` sections, each self-contained. A reply to a
question is the lead plus the one section that best matches it (at most ~200 words), with
the whole article one click away (``Reply.article``, ``Reply.section`` names the heading).

Routing (which article, or "uncovered", or "not my topic") lives in ``bot.retrieval``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import frontmatter

from bot.reply import Reply, ReplyKind, Source
from bot.retrieval import Decision, Outcome, Router

_HERE = Path(__file__).resolve().parent
_HEADING = re.compile(r"^## +(.+?)\s*$", re.M)
DOCS_SEARCH = "https://docs.docker.com/search/?q="


def knowledge_dir() -> Path:
    """Where the articles are: ``$DOCKWISE_KNOWLEDGE_DIR``, else the installed package data
    (``bot/knowledge_articles`` in a wheel), else ``knowledge/`` of a source checkout."""
    env = os.environ.get("DOCKWISE_KNOWLEDGE_DIR")
    if env:
        return Path(env)
    packaged = Path(str(resources.files("bot").joinpath("knowledge_articles")))
    if packaged.is_dir() and any(packaged.glob("*.md")):
        return packaged
    return _HERE.parent / "knowledge"


@dataclass(frozen=True, slots=True)
class ArticleSection:
    heading: str
    text: str

    @property
    def markdown(self) -> str:
        return f"## {self.heading}\n\n{self.text}"


@dataclass(frozen=True, slots=True)
class Article:
    id: str
    title: str
    question: str
    summary: str
    lead: str
    sections: list[ArticleSection]
    body: str
    questions: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    related: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, path: Path) -> Article:
        """Parse one article; raises ValueError naming the file when it is malformed."""
        import yaml

        try:
            post = frontmatter.load(str(path))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path.name}: unreadable front matter ({first})") from None
        meta: dict[str, Any] = dict(post.metadata)
        article_id = str(meta.get("id", path.stem))
        if article_id != path.stem:
            raise ValueError(f"{path.name}: id {article_id!r} differs from the file name")
        if "title" not in meta:
            raise ValueError(f"{path.name}: no title in the front matter")
        body = post.content.strip()
        lead, sections = split_sections(body)
        sources = [Source(str(s["title"]), str(s["url"])) for s in meta.get("sources") or []]
        return cls(
            id=article_id,
            title=str(meta["title"]),
            question=str(meta.get("question") or meta["title"]),
            summary=str(meta.get("summary", "")),
            lead=lead,
            sections=sections,
            body=body,
            questions=[str(q) for q in meta.get("questions") or []],
            keywords=[str(k) for k in meta.get("keywords") or []],
            sources=sources,
            related=[str(r) for r in meta.get("related") or []],
        )


def split_sections(body: str) -> tuple[str, list[ArticleSection]]:
    """``(lead, sections)`` of a Markdown body: the text before the first ``## `` heading,
    then one section per heading. Headings inside fenced code blocks don't count."""
    cuts: list[tuple[int, int, str]] = []
    in_fence = False
    offset = 0
    for line in body.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := _HEADING.match(line.rstrip("\n"))):
            cuts.append((offset, offset + len(line), m.group(1).strip()))
        offset += len(line)
    if not cuts:
        return body.strip(), []
    lead = body[: cuts[0][0]].strip()
    sections = []
    for i, (_, end, heading) in enumerate(cuts):
        stop = cuts[i + 1][0] if i + 1 < len(cuts) else len(body)
        sections.append(ArticleSection(heading, body[end:stop].strip()))
    return lead, sections


FALLBACK_TITLE = "That's not my topic"
FALLBACK_BODY = (
    "I'm dockwise: I help with containers and images. I can answer questions like why "
    "Dockerfiles start `FROM ubuntu`, whether a container is a VM, or which base image to "
    "pick, and I can explain an image: try `explain python:3.12-slim`."
)
FALLBACK_SUGGESTIONS = [
    "Why do Dockerfiles start FROM ubuntu?",
    "Is a container a virtual machine?",
    "Alpine or slim?",
    "explain debian:bookworm-slim",
]
UNCOVERED_TITLE = "I don't have an article on that yet"


class KnowledgeBase:
    """The articles plus the router that picks one for a question."""

    def __init__(self, articles: list[Article], *, router: Router | None = None) -> None:
        if not articles:
            raise ValueError("the knowledge base has no articles")
        self.articles = {a.id: a for a in sorted(articles, key=lambda a: a.id)}
        self.router = router if router is not None else Router.for_articles(self.articles)

    @classmethod
    def load(cls, directory: Path | None = None) -> KnowledgeBase:
        """Read every ``*.md`` article (README.md excepted) from ``directory`` or
        :func:`knowledge_dir`; raises ValueError for a malformed or empty knowledge base."""
        folder = directory or knowledge_dir()
        files = sorted(folder.glob("*.md"))
        return cls([Article.from_file(f) for f in files if f.name.lower() != "readme.md"])

    def decide(self, question: str) -> Decision:
        return self.router.decide(question)

    def answer(self, question: str) -> Reply:
        """The reply for a question: a targeted answer, an honest "uncovered", or the
        fallback."""
        decision = self.decide(question)
        if decision.outcome is Outcome.FALLBACK:
            return self.fallback()
        if decision.outcome is Outcome.UNCOVERED:
            return self.uncovered(question, [h.article_id for h in decision.hits])
        article = self.articles[decision.hits[0].article_id]
        return self.reply_for(article, section=self.router.best_section(question, article.id))

    def reply_for(self, article: Article, *, section: int | None = None) -> Reply:
        """A short answer from ``article``: the lead, plus section ``section`` if given."""
        chosen = article.sections[section] if section is not None else None
        body = article.lead
        if chosen is not None:
            body += f"\n\n**{chosen.heading}**\n\n{chosen.text}"
        return self._answer_reply(article, body, chosen.heading if chosen else None)

    def full_article(self, article_id: str) -> Reply:
        """The whole article as a reply (``Show full article``); KeyError for an unknown id."""
        article = self.articles[article_id]
        return self._answer_reply(article, article.body, None)

    def _answer_reply(self, article: Article, body: str, section: str | None) -> Reply:
        related = [r for r in article.related if r in self.articles]
        suggestions = [self.articles[r].question for r in related]
        return Reply(
            kind=ReplyKind.ANSWER,
            title=article.title,
            body=body,
            sources=list(article.sources),
            suggestions=suggestions,
            topic=article.id,
            related=related,
            article=article.body,
            section=section,
        )

    def uncovered(self, question: str, nearest: list[str]) -> Reply:
        """About containers, but no article answers it: say so, link a docs search, offer
        up to three nearest articles as maybe related (never as the answer)."""
        link = DOCS_SEARCH + quote_plus(question[:200])
        maybe = [a for a in nearest if a in self.articles][:3]
        return Reply(
            kind=ReplyKind.UNCOVERED,
            title=UNCOVERED_TITLE,
            body=(
                "That's a container question I don't cover yet. "
                f"The Docker docs may have it: [search the Docker docs]({link})."
            ),
            sources=[Source("Docker docs search", link)],
            suggestions=[self.articles[a].question for a in maybe],
            related=maybe,
        )

    def fallback(self) -> Reply:
        return Reply(
            kind=ReplyKind.FALLBACK,
            title=FALLBACK_TITLE,
            body=FALLBACK_BODY,
            suggestions=list(FALLBACK_SUGGESTIONS),
        )
