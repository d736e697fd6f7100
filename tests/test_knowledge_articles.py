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
        "secrets-in-images",
        "volumes-and-persistence",
        "registries-and-tags",
        "container-exits",
        "ports-and-networking",
        "disk-usage-and-cleanup",
        "docker-daemon-access",
        "compose-basics",
        "shell-in-minimal-images",
        "cpu-architectures",
        "package-managers",
        "build-cache",
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
SECTION_HEADING = re.compile(r"^## \S")

# Shape of a body: a lead paragraph, then 2-5 "## " sections. A chat reply is the lead plus
# the one best-matching section, so both are capped and each section must stand alone.
LEAD_MIN_WORDS = 10
LEAD_MAX_WORDS = 60
SECTION_MIN_WORDS = 20
SECTION_MAX_WORDS = 130
REPLY_MAX_WORDS = 200
MIN_SECTIONS = 2
MAX_SECTIONS = 5
MIN_EXAMPLE_QUESTIONS = 20


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


def split_body(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The body's lead (text before the first "## " heading) and its (heading, text) sections.

    Lines inside fenced code blocks never start a section, so a "# comment" in a code block is
    not a heading.
    """
    lead: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and SECTION_HEADING.match(line):
            sections.append((line[3:].strip(), []))
            continue
        (sections[-1][1] if sections else lead).append(line)
    return "\n".join(lead).strip(), [(h, "\n".join(b).strip()) for h, b in sections]


def section_words(heading: str, text: str) -> int:
    """Words a section adds to a chat reply, its heading included."""
    return len(heading.split()) + len(text.split())


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
    others = [h for h in headings if not SECTION_HEADING.match(h)]
    assert not others, f"{stem}: only level-2 '## ' headings are allowed: {others}"
    assert MIN_SECTIONS <= len(headings) <= MAX_SECTIONS, (
        f"{stem}: {len(headings)} sections, want {MIN_SECTIONS}-{MAX_SECTIONS}"
    )


@pytest.mark.parametrize("stem", article_stems())
def test_lead_answers_on_its_own(stem: str) -> None:
    lead, _ = split_body(body(stem))
    assert lead, f"{stem}: the body must open with a lead paragraph before any heading"
    assert "\n\n" not in lead, f"{stem}: the lead is a single paragraph"
    assert not FENCE.match(lead), f"{stem}: the lead is prose, not code"
    words = len(lead.split())
    assert LEAD_MIN_WORDS <= words <= LEAD_MAX_WORDS, (
        f"{stem}: lead has {words} words, want {LEAD_MIN_WORDS}-{LEAD_MAX_WORDS}"
    )


@pytest.mark.parametrize("stem", article_stems())
def test_sections_fit_a_chat_reply(stem: str) -> None:
    lead, sections = split_body(body(stem))
    assert sections, f"{stem}: no sections"
    for heading, text in sections:
        assert heading, f"{stem}: empty heading"
        words = section_words(heading, text)
        assert words <= SECTION_MAX_WORDS, f"{stem}: section {heading!r} has {words} words"
        assert len(text.split()) >= SECTION_MIN_WORDS, f"{stem}: section {heading!r} is too thin"
    longest = max(section_words(h, t) for h, t in sections)
    reply = len(lead.split()) + longest
    assert reply <= REPLY_MAX_WORDS, f"{stem}: lead + longest section is {reply} words"


@pytest.mark.parametrize("stem", article_stems())
def test_section_headings_are_unique(stem: str) -> None:
    _, sections = split_body(body(stem))
    headings = [h.lower() for h, _ in sections]
    assert len(set(headings)) == len(headings), f"{stem}: repeated section heading"


@pytest.mark.parametrize("stem", article_stems())
def test_main_question(stem: str) -> None:
    question = meta(stem).get("question")
    assert isinstance(question, str) and question.strip(), f"{stem}: no main question"
    assert question.strip().endswith("?"), f"{stem}: the main question ends with '?'"
    assert "\n" not in question.strip(), f"{stem}: the main question is one sentence"


def test_main_questions_are_unique() -> None:
    questions = [str(meta(stem).get("question", "")).strip().lower() for stem in article_stems()]
    duplicates = sorted({q for q in questions if q and questions.count(q) > 1})
    assert not duplicates, f"shared main questions: {duplicates}"


@pytest.mark.parametrize("stem", article_stems())
def test_questions(stem: str) -> None:
    questions = meta(stem).get("questions")
    assert isinstance(questions, list)
    assert len(questions) >= MIN_EXAMPLE_QUESTIONS, f"{stem}: {len(questions)} example questions"
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
