"""Lexical evidence: how much of a message's wording a route's own evidence uses.

A small sentence encoder places a short request written in a server's jargon ("force stop
vm 144 its hung", "why are there unassigned shards") about as far from the route's ten
examples as a weather question, though the words that matter ("vm", "shards") are the
route's own: its examples and description use them and no other route's do. The share
of a message's content words that a route's evidence uses, each word weighed by one over
the number of routes whose evidence uses it, is a second, independent piece of evidence:
in L0's ranking (:mod:`routermesh.runtime.example_index`) and in its calibration
(:mod:`routermesh.runtime.calibration`): a request outside every route rarely uses a
route's words at all, and a route whose words the message uses more than any other
route's is more likely the right one. Building the vocabulary and the calibration's
leave-one-out scores for CLINC150's 15,100 examples takes about 0.3 s.

Words are lower-cased runs of letters and digits; numbers alone, one-letter words and a
short list of English function words and generic request verbs ("show", "list") carry no
evidence; a plural "s" is dropped ("vms" is "vm"; not from "-ss", "-us", "-is"). Learned
examples, description phrases and MCP tools are evidence like the examples, so the
vocabulary grows with them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+")

_STOPWORDS_TEXT = """
a an the and or but nor to of in on at for from by with about into onto over under after
before since until is are was were be been being am do does did done can could would should
will shall may might must i me my mine we us our you your it its this that these those there
here what which who whom whose when where why how he him his she her they them their all
any some no not if then than so as up down out off just also too very please now right show
get tell give find list check see let make want need like know has have had having ll re ve
don doesn didn isn aren wasn weren won wouldn shouldn couldn haven hasn hadn mustn needn
mightn shan ain cannot
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
"""Words that say nothing about which server a request is for ("ll", "re", "ve", "don",
"isn": what is left of "we'll", "they're", "I've", "don't", "isn't"; "has" would otherwise
lose its "s" and read as "HA")."""


def content_words(text: str) -> frozenset[str]:
    """The words of ``text`` that can be evidence (see the module's docstring)."""
    words = set()
    for found in _WORD.findall(text.casefold()):
        if len(found) < 2 or found.isdigit() or found in STOPWORDS:
            continue
        plural = len(found) > 2 and found.endswith("s") and not found.endswith(("ss", "us", "is"))
        word = found[:-1] if plural else found
        if word not in STOPWORDS:  # "ours", "hers": function words once the "s" is gone
            words.add(word)
    return frozenset(words)


@dataclass(frozen=True)
class Lexical:
    """The lexical features of one route chosen for a message."""

    own: float
    """The share of the message's words the route's evidence uses."""
    margin: float
    """``own`` minus the largest other route's: words another route uses as much are no
    evidence for this one over it."""


@dataclass(frozen=True)
class RouteVocabulary:
    """The content words of every piece of evidence, and the routes whose evidence uses
    each word."""

    rows: tuple[frozenset[str], ...]
    """Each evidence row's words (as the index's rows)."""
    labels: tuple[int, ...]
    users: dict[str, Counter[int]]
    """Word -> route -> evidence rows of the route that use it."""

    @classmethod
    def build(cls, texts: Sequence[str], labels: Iterable[int]) -> RouteVocabulary:
        rows = tuple(content_words(text) for text in texts)
        label_list = tuple(int(label) for label in labels)
        users: dict[str, Counter[int]] = {}
        for words, label in zip(rows, label_list, strict=True):
            for word in words:
                users.setdefault(word, Counter())[label] += 1
        return cls(rows=rows, labels=label_list, users=users)

    def scores(self, words: frozenset[str]) -> dict[int, float]:
        """Route -> the share of ``words`` its evidence uses, each word weighed by one over
        the number of routes using it (routes using none are left out)."""
        return self._scores(words, None, None)

    def scores_left_one_out(self, row: int) -> dict[int, float]:
        """:meth:`scores` of evidence ``row``'s words as if the row were not evidence (the
        calibration's leave-one-out query)."""
        return self._scores(self.rows[row], row, None)

    def scores_left_route_out(self, row: int) -> dict[int, float]:
        """:meth:`scores` of evidence ``row``'s words as if its whole route were absent
        (the calibration's leave-route-out query)."""
        return self._scores(self.rows[row], None, self.labels[row])

    def judge(self, words: frozenset[str], route: int) -> Lexical:
        """``route``'s lexical features for a message of ``words``."""
        return lexical_of(self.scores(words), route)

    def _scores(
        self, words: frozenset[str], without_row: int | None, without_route: int | None
    ) -> dict[int, float]:
        if not words:
            return {}
        own_route = self.labels[without_row] if without_row is not None else None
        scores: dict[int, float] = {}
        for word in words:
            users = self.users.get(word)
            if not users:
                continue
            routes = [
                r for r, uses in users.items() if r != without_route and uses - (r == own_route) > 0
            ]
            for r in routes:
                scores[r] = scores.get(r, 0.0) + 1.0 / len(routes)
        return {r: score / len(words) for r, score in scores.items()}


def lexical_of(scores: dict[int, float], route: int) -> Lexical:
    """``route``'s features from :meth:`RouteVocabulary.scores`."""
    own = scores.get(route, 0.0)
    others = max((score for r, score in scores.items() if r != route), default=0.0)
    return Lexical(own, own - others)
