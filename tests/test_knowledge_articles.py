"""Checks on the knowledge base articles in knowledge/*.md (front matter and body shape)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import frontmatter
import pytest

KNOWLEDGE_DIR = Path(__file__).resolve().parent.parent / "knowledge"

REQUIRED_IDS = frozenset(
    {
        "containers-vs-vms",
        "why-base-image",
        "kernel-vs-userspace",
        "kernel-sharing",
        "from-scratch",
        "base-image-choice",
        "musl-vs-glibc",
        "layers-and-size",
        "multi-stage",
        "base-vs-parent",
        "image-vs-container",
        "inspect-image-os",
        "cmd-vs-entrypoint",
        "root-and-isolation",
    }
)

# The articles that carry the seed post's argument: shared kernel, image = user space only.
SEED_HEART_IDS = ("why-base-image", "containers-vs-vms", "kernel-vs-userspace", "from-scratch")

# Authoritative hosts. A tuple restricts the host to those path prefixes; None allows any path.
ALLOWED_SOURCES: dict[str, tuple[str, ...] | None] = {
    "docs.docker.com": None,
    "man7.org": ("/linux/man-pages/",),
    "kernel.org": None,
    "www.kernel.org": None,
    "docs.kernel.org": None,
    "wiki.debian.org": None,
    "www.debian.org": None,
    "alpinelinux.org": None,
    "wiki.alpinelinux.org": None,
    "docs.alpinelinux.org": None,
    "ubuntu.com": None,
    "documentation.ubuntu.com": None,
    "musl.libc.org": None,
    "www.gnu.org": ("/software/libc",),
    "github.com": ("/opencontainers/", "/GoogleContainerTools/distroless"),
}

ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
FENCE = re.compile(r"^\s*```")


@cache
def load_articles() -> dict[str, frontmatter.Post]:
    """Every knowledge/*.md parsed with python-frontmatter, keyed by file stem."""
    return {path.stem: frontmatter.load(str(path)) for path in sorted(KNOWLEDGE_DIR.glob("*.md"))}


def article_stems() -> list[str]:
    return sorted(load_articles())


def meta(stem: str) -> dict[str, Any]:
    return dict(load_articles()[stem].metadata)


def body(stem: str) -> str:
    return str(load_articles()[stem].content)


def prose_lines(text: str) -> list[str]:
    """The body's lines outside fenced code blocks."""
    out: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append(line)
    return out


def test_knowledge_directory_has_articles() -> None:
    assert KNOWLEDGE_DIR.is_dir()
    assert len(load_articles()) >= len(REQUIRED_IDS)


def test_required_ids_exist() -> None:
    ids = {meta(stem).get("id") for stem in article_stems()}
    missing = REQUIRED_IDS - ids
    assert not missing, f"missing required articles: {sorted(missing)}"


@pytest.mark.parametrize("stem", article_stems())
def test_id_matches_file_name(stem: str) -> None:
    article_id = meta(stem).get("id")
    assert article_id == stem
    assert ID_PATTERN.match(stem), f"{stem}: ids are lower-case words joined by hyphens"


@pytest.mark.parametrize("stem", article_stems())
def test_title_and_summary(stem: str) -> None:
    data = meta(stem)
    title = data.get("title")
    summary = data.get("summary")
    assert isinstance(title, str) and title.strip()
    assert isinstance(summary, str) and summary.strip()
    assert len(summary) <= 240, f"{stem}: summary is {len(summary)} chars"


@pytest.mark.parametrize("stem", article_stems())
def test_body_word_count(stem: str) -> None:
    words = len(body(stem).split())
    assert 150 <= words <= 400, f"{stem}: body has {words} words"


@pytest.mark.parametrize("stem", article_stems())
def test_body_shape(stem: str) -> None:
    text = body(stem)
    fence_lines = sum(1 for line in text.splitlines() if FENCE.match(line))
    assert fence_lines % 2 == 0, f"{stem}: unbalanced code fence"
    assert fence_lines <= 2, f"{stem}: at most one fenced code block"
    headings = [line for line in prose_lines(text) if line.startswith("#")]
    assert not headings, f"{stem}: no Markdown headings in the body: {headings}"
    first_paragraph = text.strip().split("\n\n", 1)[0]
    assert len(first_paragraph.split()) >= 10, f"{stem}: first paragraph must answer directly"


@pytest.mark.parametrize("stem", article_stems())
def test_questions(stem: str) -> None:
    questions = meta(stem).get("questions")
    assert isinstance(questions, list)
    assert len(questions) >= 3
    assert all(isinstance(q, str) and q.strip() for q in questions)
    assert len({q.strip().lower() for q in questions}) == len(questions), "duplicate questions"


@pytest.mark.parametrize("stem", article_stems())
def test_keywords(stem: str) -> None:
    keywords = meta(stem).get("keywords")
    assert isinstance(keywords, list)
    assert 8 <= len(keywords) <= 20, f"{stem}: {len(keywords)} keywords"
    assert all(isinstance(k, str) and k.strip() for k in keywords)


@pytest.mark.parametrize("stem", article_stems())
def test_sources_are_authoritative(stem: str) -> None:
    sources = meta(stem).get("sources")
    assert isinstance(sources, list)
    assert 1 <= len(sources) <= 3, f"{stem}: {len(sources)} sources"
    for source in sources:
        assert isinstance(source, dict)
        assert isinstance(source.get("title"), str) and source["title"].strip()
        url = source.get("url")
        assert isinstance(url, str)
        parts = urlsplit(url)
        assert parts.scheme == "https", f"{stem}: {url} is not https"
        assert parts.hostname in ALLOWED_SOURCES, f"{stem}: {url} is not on an allowed host"
        prefixes = ALLOWED_SOURCES[parts.hostname]
        if prefixes is not None:
            assert parts.path.startswith(prefixes), f"{stem}: {url} is outside allowed paths"


@pytest.mark.parametrize("stem", article_stems())
def test_related_ids_exist(stem: str) -> None:
    related = meta(stem).get("related")
    assert isinstance(related, list)
    assert 1 <= len(related) <= 4
    known = set(article_stems())
    for other in related:
        assert other != stem, f"{stem} lists itself as related"
        assert other in known, f"{stem}: related id {other!r} has no article"
    assert len(set(related)) == len(related)


def test_titles_are_unique() -> None:
    titles = [str(meta(stem)["title"]).strip().lower() for stem in article_stems()]
    duplicates = sorted({t for t in titles if titles.count(t) > 1})
    assert not duplicates, f"shared titles: {duplicates}"


@pytest.mark.parametrize("stem", SEED_HEART_IDS)
def test_seed_heart_articles_mention_kernel_and_user_space(stem: str) -> None:
    text = body(stem).lower()
    assert "kernel" in text
    assert "user space" in text or "userspace" in text
