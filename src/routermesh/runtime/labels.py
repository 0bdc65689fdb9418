"""Confidence over route labels from a model's first-token log-probabilities.

A generative layer asks its model server for one token with the top-k
log-probabilities (OpenAI-compatible completions, ``logprobs=k``). A route label
may span several tokens ("credit-cards"); what the server reports is the first
token only, as text (" credit", "cr", ...). Each reported token is attributed to
the labels it can begin:

- a token that begins exactly one label adds its probability to that label;
- a token that begins several labels ("c" for "cortex" and "credit-cards") is
  ambiguous: its probability counts in the denominator but for no label, so an
  ambiguous first token can only lower confidence, never pick a route;
- a token that begins no label is not a label: it is left out of the
  renormalization, but if it is the model's most likely token the layer abstains
  (an output that is not a valid label is never routed).

Confidence is the best label's probability renormalized over all candidate
labels (plus the ambiguous mass). Labels whose first tokens are distinct give
the model an unambiguous choice; choosing such labels is the prompt's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routermesh.runtime.decision import Reason, Verdict


@dataclass(frozen=True)
class LabelScores:
    """Probability mass per label, the ambiguous mass, and the most likely raw token."""

    mass: dict[str, float]
    ambiguous: float
    top_token_is_label: bool

    @property
    def total(self) -> float:
        return sum(self.mass.values()) + self.ambiguous


def _token_key(token: str) -> str:
    return token.strip().lower()


def _labels_begun_by(key: str, labels: Sequence[str]) -> list[str]:
    return [label for label in labels if label.startswith(key)]


def score_labels(top_logprobs: Mapping[str, float], labels: Sequence[str]) -> LabelScores:
    """Attribute first-token probabilities to ``labels`` (see the module docstring).

    Tokens that differ only by leading space or case (" Grafana", "grafana") are the
    same choice: they are summed before the most likely choice is taken.
    """
    normalized = [label.lower() for label in labels]
    by_key: dict[str, float] = {}
    for token, logprob in top_logprobs.items():
        key = _token_key(token)
        if key and math.isfinite(logprob):
            by_key[key] = by_key.get(key, 0.0) + math.exp(logprob)
    mass = dict.fromkeys(labels, 0.0)
    ambiguous = 0.0
    for key, probability in by_key.items():
        begun = _labels_begun_by(key, normalized)
        if len(begun) == 1:
            mass[labels[normalized.index(begun[0])]] += probability
        elif begun:
            ambiguous += probability
    top_key = max(by_key, key=lambda k: (by_key[k], k), default=None)
    top_token_is_label = top_key is not None and bool(_labels_begun_by(top_key, normalized))
    return LabelScores(mass=mass, ambiguous=ambiguous, top_token_is_label=top_token_is_label)


def verdict_from_logprobs(top_logprobs: Mapping[str, float], labels: Sequence[str]) -> Verdict:
    """The layer's verdict: the best label and its renormalized confidence, or an
    abstention (``invalid_label``) when the model's answer is not a label."""
    if not labels:
        return Verdict.abstain(Reason.NO_LAYER)
    scores = score_labels(top_logprobs, labels)
    if not scores.top_token_is_label or scores.total <= 0.0:
        return Verdict.abstain(Reason.INVALID_LABEL)
    best = max(labels, key=lambda label: scores.mass[label])
    if scores.mass[best] <= 0.0:
        # Only ambiguous tokens: the model's choice cannot be told apart.
        return Verdict.abstain(Reason.INVALID_LABEL)
    confidence = min(1.0, scores.mass[best] / scores.total)
    return Verdict(route=best, confidence=confidence)


def parse_top_logprobs(data: Any) -> dict[str, float]:
    """The first generated token's top log-probabilities from a completions response.

    Two shapes exist: the OpenAI legacy completions shape (vLLM), where
    ``logprobs.top_logprobs[0]`` maps token to log-probability, and the chat-style
    shape (llama.cpp's ``llama-server``), where ``logprobs.content[0].top_logprobs``
    lists ``{"token", "logprob"}`` objects. Raises ``ValueError`` (or
    ``KeyError``/``TypeError``/``IndexError``) for anything else.
    """
    logprobs = data["choices"][0]["logprobs"]
    if isinstance(logprobs, dict) and "content" in logprobs:
        entries = logprobs["content"][0]["top_logprobs"]
        if not isinstance(entries, list) or not entries:
            raise ValueError("no top_logprobs for the first token")
        top: dict[str, float] = {}
        for entry in entries:
            token = str(entry["token"])
            # Two token ids may decode to one string: both are that text, so add them.
            logprob = float(entry["logprob"])
            if token in top:
                logprob = math.log(math.exp(top[token]) + math.exp(logprob))
            top[token] = logprob
        return top
    legacy = logprobs["top_logprobs"][0]
    if not isinstance(legacy, dict) or not legacy:
        raise ValueError("no top_logprobs for the first token")
    return {str(token): float(logprob) for token, logprob in legacy.items()}
