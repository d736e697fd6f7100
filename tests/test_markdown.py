"""The shared Markdown toolkit: one fence-safe splitter used by every renderer."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord_embeds import split_text
from adapters.slack_blocks import split_mrkdwn, to_mrkdwn
from bot.markdown import segments, split

FENCE = re.compile(r"^\s*```", re.M)


def test_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"RUN step {i:03d} " + "x" * 40 for i in range(60))
    text = f"Intro paragraph.\n\n```dockerfile\n{code}\n```\n\nOutro paragraph."
    pieces = split(text, 500)
    assert all(len(p) <= 500 for p in pieces)
    code_pieces = [p for p in pieces if "RUN step" in p]
    assert len(code_pieces) > 1
    for piece in code_pieces:
        assert "```dockerfile\n" in piece
        assert len(FENCE.findall(piece)) == 2  # opened and closed within the piece
    steps = re.findall(r"RUN step (\d{3})", "\n".join(pieces))
    assert steps == [f"{i:03d}" for i in range(60)]
    assert pieces[0].startswith("Intro paragraph.")
    assert pieces[-1].endswith("Outro paragraph.")


def test_unclosed_fence_and_unclaimed_lines_are_kept() -> None:
    text = "[ref]: https://example.com\n\npara\n\n```\nopen code"
    kinds = [(s.source, s.fence) for s in segments(text)]
    assert kinds[0] == ("[ref]: https://example.com", None)
    assert kinds[-1] == ("```\nopen code\n```", "```")


def test_slack_links_stay_whole_and_entities_are_not_cut() -> None:
    mrkdwn = to_mrkdwn(" ".join(["[the docs](https://docs.docker.com/) a&b"] * 400))
    pieces = split_mrkdwn(mrkdwn, 300)
    for piece in pieces:
        assert len(piece) <= 300
        assert piece.count("<") == piece.count(">")
        assert not re.search(r"&(?:a|am|amp)?$", piece)


markdownish = st.lists(
    st.one_of(
        st.text(alphabet=st.sampled_from(list("ab cd\n*-_[]()#>1.")), min_size=1, max_size=300),
        st.builds(
            lambda lang, lines: f"```{lang}\n" + "\n".join(lines) + "\n```",
            st.sampled_from(["", "python", "dockerfile"]),
            st.lists(st.text(alphabet="xyz {}", max_size=120), max_size=40),
        ),
    ),
    min_size=1,
    max_size=12,
).map("\n\n".join)


@settings(max_examples=150, deadline=None)
@given(markdownish, st.sampled_from([200, 350, 1024]))
def test_every_piece_fits_is_non_empty_and_has_balanced_fences(text: str, limit: int) -> None:
    for pieces in (split(text, limit), split_text(text, limit)):
        for piece in pieces:
            assert 0 < len(piece) <= limit
            assert piece.strip()
            assert len(FENCE.findall(piece)) % 2 == 0, piece
        original = [w for w in re.findall(r"[a-z]+", text)]
        kept = [w for w in re.findall(r"[a-z]+", "\n".join(pieces))]
        # Words survive in order; reopened fences add only language names.
        languages = {"python", "dockerfile"}
        assert [w for w in kept if w not in languages] == [
            w for w in original if w not in languages
        ]
