"""One Markdown toolkit for replies: parse once with markdown-it-py, split fence-safely.

``Reply.body`` and section bodies are CommonMark (paragraphs, lists, ``**bold**``,
```code```, fenced blocks, ``[text](url)`` links). Renderers (each chat platform's
markup, the terminal) walk ``parse(text)``'s tokens; every platform cuts long text with
the one splitter here, ``split``:

- the text is cut between top-level blocks (paragraphs, lists, headings, fenced code, as
  markdown-it finds them), then between lines, then between words (``atom`` says what a
  word is, e.g. a chat platform's ``<url|label>`` link with spaces stays whole), and a word longer
  than a piece is cut only where ``safe_cut`` allows (never inside an ``&amp;`` entity);
- a fenced code block cut in two is closed at the cut and reopened with its own opening
  line (language kept) in the next piece, so formatting never breaks;
- no piece is longer than ``limit`` characters and no piece is empty; joining the pieces
  loses only the whitespace at the cuts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark")
_WORD = re.compile(r"\S+")
_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})")


def parse(text: str) -> list[Token]:
    """markdown-it tokens of ``text`` (CommonMark; raw HTML is kept as text tokens)."""
    return _MD.parse(text)


@dataclass(frozen=True, slots=True)
class Segment:
    """A top-level block's source. ``fence`` is its opening line when it is fenced code."""

    source: str
    fence: str | None = None


def segments(text: str) -> list[Segment]:
    """Top-level blocks of ``text`` in order, each with its exact source lines. Lines no
    block claims (e.g. link reference definitions) are kept as blocks of their own."""
    lines = text.split("\n")
    blocks: list[tuple[int, int, str | None]] = []
    for token in parse(text):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        start, end = token.map
        blocks.append((start, end, lines[start].strip() if token.type == "fence" else None))
    out: list[Segment] = []
    covered = 0

    def plain(start: int, end: int) -> None:
        source = "\n".join(lines[start:end]).strip("\n")
        if source.strip():
            out.append(Segment(source))

    for start, end, fence in blocks:
        if start < covered:
            continue
        plain(covered, start)  # unclaimed lines before this block
        if fence is None:
            plain(start, end)
        else:
            marker = _FENCE_LINE.match(fence) or _FENCE_LINE.match("```")
            assert marker is not None
            run = marker.group(1)
            body = lines[start:end]
            if len(body) < 2 or not body[-1].strip().startswith(run):
                body = [*body, run]  # unclosed at the end of the text: close it
            out.append(Segment("\n".join(body), fence=fence))
        covered = end
    plain(covered, len(lines))
    return out


def _hard_split(word: str, limit: int, safe_cut: Callable[[str, int], int]) -> list[str]:
    pieces: list[str] = []
    while len(word) > limit:
        cut = max(1, min(limit, safe_cut(word, limit)))
        pieces.append(word[:cut])
        word = word[cut:]
    if word:
        pieces.append(word)
    return pieces


def _pack(pieces: list[str], sep: str, limit: int) -> list[str]:
    """Greedily join pieces (each <= limit) with ``sep`` into chunks <= limit."""
    chunks: list[str] = []
    current: str | None = None
    for piece in pieces:
        if current is None:
            current = piece
        elif len(current) + len(sep) + len(piece) <= limit:
            current += sep + piece
        else:
            chunks.append(current)
            current = piece
    if current is not None:
        chunks.append(current)
    return chunks


def _split_prose(
    text: str, limit: int, atom: re.Pattern[str], safe_cut: Callable[[str, int], int]
) -> list[str]:
    lines: list[str] = []
    for line in text.split("\n"):
        if len(line) <= limit:
            lines.append(line)
            continue
        words: list[str] = []
        for word in atom.findall(line):
            words.extend(_hard_split(word, limit, safe_cut) if len(word) > limit else [word])
        lines.extend(_pack(words, " ", limit))
    return _pack(lines, "\n", limit)


def _split_code(
    segment: Segment, limit: int, safe_cut: Callable[[str, int], int], reopen: str | None
) -> list[str]:
    lines = segment.source.split("\n")
    opening = reopen if reopen is not None else (segment.fence or "```")
    closing = lines[-1].strip() or "```"
    inner = lines[1:-1]
    room = limit - len(opening) - len(closing) - 2
    if room < 1:
        raise ValueError("limit too small to split fenced code")
    pieces: list[str] = []
    for line in inner:
        pieces.extend(_hard_split(line, room, safe_cut) if len(line) > room else [line])
    return [f"{opening}\n{chunk}\n{closing}" for chunk in _pack(pieces, "\n", room)]


def _any_cut(_text: str, cut: int) -> int:
    return cut


def split(
    text: str,
    limit: int,
    *,
    atom: re.Pattern[str] = _WORD,
    safe_cut: Callable[[str, int], int] = _any_cut,
    reopen_fence: str | None = None,
) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut cleanly (see the module
    docstring). ``reopen_fence`` replaces a cut code block's opening line in its pieces
    (e.g. a bare ```` ``` ```` where the platform would show the language as text).
    Raises ValueError when ``limit`` cannot hold a fenced line."""
    if len(text) <= limit:
        return [text] if text.strip() else []
    pieces: list[str] = []
    for segment in segments(text):
        if len(segment.source) <= limit and segment.fence is None:
            pieces.append(segment.source)
        elif segment.fence is not None:
            if len(segment.source) <= limit:
                pieces.append(segment.source)
            else:
                pieces.extend(_split_code(segment, limit, safe_cut, reopen_fence))
        else:
            pieces.extend(_split_prose(segment.source, limit, atom, safe_cut))
    return _pack(pieces, "\n\n", limit)
