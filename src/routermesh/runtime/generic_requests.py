"""Generic requests a tuned encoder learns as one more class (``head.mode: encoder`` with
``generic_requests``).

Ten examples per route teach the encoder what each route is, not what lies outside
every route, so a request for none of them ("what's the weather tomorrow") can sit as
near a route's examples as that route's own requests do. Tuned with a few hundred
requests people send assistants as an extra class, the encoder learns to put them apart;
they are never examples L0 serves. The packaged corpus is 1,200 train rows of HWU64
(Liu et al., IWSDS 2019; CC BY 4.0) and CLINC150 (Larson et al., EMNLP 2019; CC BY 3.0),
drawn by ``bench/routermesh_bench/generic_corpus.py``; ``data/README.md`` has the
attribution. A generic request as near the table's evidence as ``NEAR`` may be one of the
table's own requests, so it is left out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from routermesh.runtime.contract.config import GENERIC_REQUESTS_VERSION, GenericSource

CORPUS = Path(__file__).parent / "data" / "generic-requests.jsonl"
ROWS = 300
"""Generic requests learned per table (measured: bench/results/experiments/)."""
NEAR = 0.6
"""Cosine similarity (base encoder) to the table's nearest evidence at which a generic
request is left out."""
CLAUSE_THRESHOLDS = (0.85, 0.6)
"""Multi-step thresholds (a clause, a joined clause) while an encoder tuned with generic
requests serves: its clauses are judged by P(route | in scope) alone, a different scale
from the layer's P(in scope) x P(route) (picked on the homelab and tool dev sets)."""
SINGLE_ROUTE_CONFIDENCE = 0.95
"""How sure of one route such an encoder must be for a message not to be split (the
packaged encoder's 0.9 is too low for it: learning the generic requests sharpens its
confidence, and on the homelab dev set two multi-step requests at 0.90-0.95 routed whole;
at 0.95 they escalate and the tool table keeps its coverage within half a point)."""


class GenericRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    source: GenericSource


class CorpusError(Exception):
    pass


def load(sources: Sequence[GenericSource], path: Path = CORPUS) -> list[str]:
    """The corpus's texts from ``sources``, in its order (a seeded shuffle)."""
    wanted = set(sources)
    texts: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise CorpusError(f"the generic request corpus is unreadable: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = GenericRequest.model_validate_json(line)
        except ValidationError as error:
            raise CorpusError(f"{path}:{number}: {error.errors()[0]['msg']}") from None
        if row.source in wanted:
            texts.append(row.text)
    return texts


@cache
def version(path: Path = CORPUS) -> str:
    """Digest of the corpus and of how a table draws from it: an artifact tuned with an
    earlier corpus or draw is another recipe's (retrained, never served as this one)."""
    try:
        body = path.read_bytes()
    except OSError as error:
        raise CorpusError(f"the generic request corpus is unreadable: {error}") from error
    return hashlib.sha256(body + f"|{ROWS}|{NEAR}".encode()).hexdigest()[:16]


def version_for(sources: Sequence[GenericSource]) -> str:
    """What an artifact tuned with ``sources`` records as its ``generic_version`` (none:
    empty)."""
    return GENERIC_REQUESTS_VERSION if sources else ""


def unlike(
    texts: Sequence[str],
    vectors: np.ndarray,
    evidence: np.ndarray,
    *,
    rows: int = ROWS,
    near: float = NEAR,
) -> list[str]:
    """The first ``rows`` of ``texts`` (unit ``vectors``) whose nearest evidence vector is
    less similar than ``near``."""
    if not texts or evidence.size == 0:
        return list(texts[:rows])
    nearest = (vectors @ evidence.T).max(axis=1)
    return [text for text, best in zip(texts, nearest, strict=True) if best < near][:rows]
