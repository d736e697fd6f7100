"""The knowledge base: Markdown articles with front matter, and answering from them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import frontmatter

from bot.other_senses import OTHER_SENSES
from bot.reply import Reply, ReplyKind, Source
from bot.retrieval import Decision, Passage, Retriever

_HERE = Path(__file__).resolve().parent


def knowledge_dir() -> Path:
    """``$DOCKWISE_KNOWLEDGE_DIR``, else ``knowledge/`` beside the ``bot`` package."""
    env = os.environ.get("DOCKWISE_KNOWLEDGE_DIR")
    return Path(env) if env else _HERE.parent / "knowledge"


@dataclass(frozen=True, slots=True)
class Article:
    id: str
    title: str
    summary: str
    body: str
    questions: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    related: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, path: Path) -> Article:
        post = frontmatter.load(str(path))
        meta: dict[str, Any] = dict(post.metadata)
        article_id = str(meta.get("id", path.stem))
        if article_id != path.stem:
            raise ValueError(f"{path.name}: id {article_id!r} differs from the file name")
        sources = [Source(str(s["title"]), str(s["url"])) for s in meta.get("sources") or []]
        return cls(
            id=article_id,
            title=str(meta["title"]),
            summary=str(meta.get("summary", "")),
            body=post.content.strip(),
            questions=[str(q) for q in meta.get("questions") or []],
            keywords=[str(k) for k in meta.get("keywords") or []],
            sources=sources,
            related=[str(r) for r in meta.get("related") or []],
        )

    def passages(self) -> list[Passage]:
        head = " ".join([self.title, self.title, self.summary, " ".join(self.keywords)])
        out = [Passage(self.id, head)]
        out += [Passage(self.id, q) for q in self.questions]
        paragraphs = [p for p in re.split(r"\n\s*\n", self.body) if p.strip()]
        out += [Passage(self.id, p, weight=0.8) for p in paragraphs]
        return out


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


class KnowledgeBase:
    def __init__(self, articles: list[Article]) -> None:
        if not articles:
            raise ValueError("the knowledge base has no articles")
        self.articles = {a.id: a for a in sorted(articles, key=lambda a: a.id)}
        passages = [p for a in self.articles.values() for p in a.passages()]
        passages += [Passage(f"~{name}", text, reject=True) for name, text in OTHER_SENSES.items()]
        domain = [" ".join([a.title, *a.keywords]) for a in self.articles.values()]
        self.retriever = Retriever(passages, domain)

    @classmethod
    def load(cls, directory: Path | None = None) -> KnowledgeBase:
        folder = directory or knowledge_dir()
        files = sorted(folder.glob("*.md"))
        return cls([Article.from_file(f) for f in files if f.name.lower() != "readme.md"])

    def decide(self, question: str) -> Decision:
        return self.retriever.decide(question)

    def answer(self, question: str) -> Reply:
        decision = self.decide(question)
        if not decision.on_topic:
            return self.fallback()
        return self.reply_for(self.articles[decision.hits[0].article_id])

    def reply_for(self, article: Article) -> Reply:
        related = [r for r in article.related if r in self.articles]
        suggestions = [self.articles[r].questions[0] for r in related if self.articles[r].questions]
        return Reply(
            kind=ReplyKind.ANSWER,
            title=article.title,
            body=article.body,
            sources=list(article.sources),
            suggestions=suggestions,
            topic=article.id,
            related=related,
        )

    def fallback(self) -> Reply:
        return Reply(
            kind=ReplyKind.FALLBACK,
            title=FALLBACK_TITLE,
            body=FALLBACK_BODY,
            suggestions=list(FALLBACK_SUGGESTIONS),
        )
