"""Route a question to a knowledge article: BM25 (bm25s) plus a linear text classifier.

Two well-kept libraries, two views of the same knowledge base:

- **BM25** (bm25s, Snowball stemming, synonym expansion). Each article is indexed as
  several passages (title+summary+keywords, each example question, each body paragraph)
  and scores as its best passage plus a share of its second best.
- **A linear classifier** (scikit-learn LinearSVC over word 1-2-grams and character
  3-4-grams) trained on the same passages, article id as the label. Character n-grams
  catch inflections, typos and pasted error text that exact terms miss.

The article ranking mixes both (normalised BM25 and the classifier's softmax). A question
is on topic only if it shares enough domain vocabulary, clears a BM25 floor, matches an
article better than the reject class (``bot.other_senses``: everyday and other-technical
senses of our words), and the classifier does not put it in that reject class either.
The constants are tuned on tests/data/qa_eval.yaml; the held-out
set in bench/qa_eval.py checks they generalise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np
import Stemmer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

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
    MIN_COVERAGE = 0.2  # share of the question's words that must be domain vocabulary
    MIN_SCORE = 1.0  # BM25 floor for the best article
    SECOND_PASSAGE_SHARE = 0.3
    REJECT_MARGIN = 1.0  # the best article must beat the best reject-class passage
    CLASSIFIER_WEIGHT = 0.5  # share of the classifier in the mixed ranking
    SOFTMAX_SCALE = 5.0  # turns SVM margins into a distribution comparable to BM25 shares
    REJECT_LABEL = "~other"

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
        self._train_classifier()

    def _train_classifier(self) -> None:
        self._features = FeatureUnion(
            [
                (
                    "words",
                    TfidfVectorizer(preprocessor=expand, ngram_range=(1, 2), sublinear_tf=True),
                ),
                (
                    "chars",
                    TfidfVectorizer(
                        preprocessor=expand,
                        analyzer="char_wb",
                        ngram_range=(3, 4),
                        sublinear_tf=True,
                    ),
                ),
            ]
        )
        labels = [self.REJECT_LABEL if p.reject else p.article_id for p in self._passages]
        matrix = self._features.fit_transform([p.text for p in self._passages])
        self._classifier = LinearSVC(C=1.0).fit(matrix, labels)
        classes = list(self._classifier.classes_)
        self._reject_column = (
            classes.index(self.REJECT_LABEL) if self.REJECT_LABEL in classes else -1
        )
        # Column of each article in the classifier's output (reject class has none).
        self._class_column = np.array(
            [classes.index(a) if a in classes else -1 for a in self._article_ids]
        )

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
        per_article = self._aggregate(self._bm25.get_scores(query) * self._weights)
        rejected = float(per_article[self._reject].max()) if self._reject.any() else 0.0
        per_article[self._reject] = 0.0
        best_bm25 = float(per_article.max())
        margins = self._classifier.decision_function(self._features.transform([question]))[0]
        on_topic = (
            coverage >= self.MIN_COVERAGE
            and best_bm25 >= self.MIN_SCORE
            and best_bm25 > rejected * self.REJECT_MARGIN
            and int(np.argmax(margins)) != self._reject_column  # the classifier agrees
        )
        mixed = self._mix(margins, per_article / best_bm25 if best_bm25 > 0 else per_article)
        order = [i for i in np.argsort(-mixed) if not self._reject[i]][:k]
        hits = [Hit(self._article_ids[i], float(mixed[i])) for i in order]
        return Decision(hits, coverage, on_topic)

    def _mix(self, margins: np.ndarray, bm25_share: np.ndarray) -> np.ndarray:
        z = margins * self.SOFTMAX_SCALE
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        per_article = np.where(self._class_column >= 0, probs[self._class_column], 0.0)
        w = self.CLASSIFIER_WEIGHT
        mixed: np.ndarray = w * per_article + (1 - w) * bm25_share
        return mixed

    def _aggregate(self, scores: np.ndarray) -> np.ndarray:
        """Per article: its best passage score plus a share of its second best."""
        n = len(self._article_ids)
        order = np.argsort(-scores, kind="stable")
        articles = self._passage_article[order]
        best = np.zeros(n, dtype=np.float32)
        second = np.zeros(n, dtype=np.float32)
        # First and second occurrence of each article in descending score order.
        _, first_pos = np.unique(articles, return_index=True)
        best[articles[first_pos]] = scores[order[first_pos]]
        mask = np.ones(len(order), dtype=bool)
        mask[first_pos] = False
        rest_articles = articles[mask]
        rest_scores = scores[order[mask]]
        _, second_pos = np.unique(rest_articles, return_index=True)
        second[rest_articles[second_pos]] = rest_scores[second_pos]
        return best + self.SECOND_PASSAGE_SHARE * second
