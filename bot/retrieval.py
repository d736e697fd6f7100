"""Rank knowledge articles for a question with BM25 (bm25s), stemming and synonyms.

Each article is indexed as several passages (its title+summary+keywords, each example
question, each body paragraph) and scores as its best passage plus a share of its
second best, so a short question that matches one example question well wins, and a
long question that matches the body well wins too.

Off-topic detection does not rely on a raw score alone (BM25 scores grow with query
length): a question is on topic only if enough of its words are domain vocabulary (the
articles' titles, questions and keywords plus the synonym table) and the best score
clears a floor. Both numbers are tuned on tests/data/qa_eval.yaml and checked on the
held-out set in bench/qa_eval.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import Stemmer

from bot.synonyms import SYNONYMS

_TOKEN = re.compile(r"[a-z0-9][a-z0-9+#]*")
# Words that say nothing about the topic: bm25s's list plus chat filler.
_STOP = frozenset(
    """
    a an and are as at be but by for if in into is it no not of on or such that the their
    then there these they this to was will with i im i'm me my we our you your do does did
    doing can could should would how what why when where which who whom whose vs versus
    about just really so get got any some thing things way ok okay pls please hey hi hello
    thanks thank there's what's isn't aren't don't doesn't its it's am been being have has
    had having here also too very much more most use using used need needs want wants one
    like same other else still even ever every all each both few many lot lots make makes
    made actually basically
    """.split()  # noqa: SIM905
)

_SYN_PATTERNS = sorted(SYNONYMS.items(), key=lambda kv: -len(kv[0]))
_SYN_RE = re.compile(
    r"(?<![\w-])(" + "|".join(re.escape(k) for k, _ in _SYN_PATTERNS) + r")(?![\w-])"
)


def expand(text: str) -> str:
    """Append synonym expansions for every known word or phrase in ``text``."""
    lowered = text.lower()
    extra = [SYNONYMS[m.group(1)] for m in _SYN_RE.finditer(lowered)]
    return lowered + (" " + " ".join(extra) if extra else "")


@dataclass(frozen=True, slots=True)
class Passage:
    article_id: str
    text: str
    weight: float = 1.0
    reject: bool = False  # a neighbouring, non-container topic (see bot.other_senses)


@dataclass(frozen=True, slots=True)
class Hit:
    article_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Decision:
    hits: list[Hit]
    coverage: float  # share of the question's content words the domain knows
    on_topic: bool


class Retriever:
    MIN_COVERAGE = 0.2
    MIN_SCORE = 1.0
    SECOND_PASSAGE_SHARE = 0.3
    REJECT_MARGIN = 1.0

    def __init__(self, passages: Sequence[Passage], domain_text: Iterable[str]) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._passages = list(passages)
        self._article_ids = sorted({p.article_id for p in self._passages})
        self._reject = np.array(
            [any(p.reject for p in self._passages if p.article_id == a) for a in self._article_ids]
        )
        self._article_index = {a: i for i, a in enumerate(self._article_ids)}
        self._passage_article = np.array(
            [self._article_index[p.article_id] for p in self._passages], dtype=np.int32
        )
        self._weights = np.array([p.weight for p in self._passages], dtype=np.float32)
        corpus_tokens = [self.tokens(expand(p.text)) for p in self._passages]
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus_tokens, show_progress=False)
        self._vocab: frozenset[str] = frozenset(self._bm25.vocab_dict)
        domain: set[str] = set()
        for text in domain_text:
            domain.update(self.tokens(text))
        for key, value in SYNONYMS.items():
            domain.update(self.tokens(key))
            domain.update(self.tokens(value))
        self._domain = frozenset(domain)

    def tokens(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOP and len(w) > 1]
        return [str(s) for s in self._stemmer.stemWords(words)]

    def decide(self, question: str, k: int = 3) -> Decision:
        own = self.tokens(question)
        if not own:
            return Decision([], 0.0, False)
        known = sum(1 for t in own if t in self._domain)
        coverage = known / len(own)
        query = [t for t in self.tokens(expand(question)) if t in self._vocab]
        if not query:
            return Decision([], coverage, False)
        scores = self._bm25.get_scores(query) * self._weights
        per_article = self._aggregate(scores)
        rejected = float(per_article[self._reject].max()) if self._reject.any() else 0.0
        per_article[self._reject] = -1.0
        order = np.argsort(-per_article)[:k]
        hits = [Hit(self._article_ids[i], float(per_article[i])) for i in order]
        on_topic = (
            coverage >= self.MIN_COVERAGE
            and hits[0].score >= self.MIN_SCORE
            and hits[0].score > rejected * self.REJECT_MARGIN
        )
        return Decision(hits, coverage, on_topic)

    def _aggregate(self, scores: np.ndarray) -> np.ndarray:
        n = len(self._article_ids)
        best = np.zeros(n, dtype=np.float32)
        second = np.zeros(n, dtype=np.float32)
        for idx in np.argsort(-scores):
            a = self._passage_article[idx]
            s = scores[idx]
            if best[a] == 0.0:
                best[a] = s
            elif second[a] == 0.0:
                second[a] = s
        return best + self.SECOND_PASSAGE_SHARE * second
