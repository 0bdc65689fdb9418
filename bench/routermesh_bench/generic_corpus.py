"""Writes the packaged corpus of generic requests (``runtime/generic_requests.py``) from
the HWU64 and CLINC150 train files: both files' rows in that order, shuffled with seed 0,
the first 1,200 kept with their source. The same pool as
``bench/experiments/tuned_encoder.py --background`` with both files (whose figures chose
the corpus; its prior tables drew from one file at a time). Train splits only: the public
sets' held-out rows are never in it. ``--out`` defaults to the package's own file (a
source checkout).

    .venv/bin/python -m routermesh_bench.generic_corpus --datasets ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from routermesh.bootstrap import read_rows
from routermesh.runtime.generic_requests import CORPUS

SOURCES = ("hwu64", "clinc150")
SIZE = 1200


def draw(datasets: Path, size: int = SIZE) -> list[tuple[str, str]]:
    """(text, source) of the corpus, in its order."""
    pool = [
        (row.text, source)
        for source in SOURCES
        for row in read_rows(datasets / source / "train.jsonl")
    ]
    random.Random(0).shuffle(pool)  # noqa: S311 - a sample, not a secret
    return pool[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=CORPUS)
    args = parser.parse_args()
    lines = [
        json.dumps({"text": text, "source": source}, ensure_ascii=False)
        for text, source in draw(args.datasets)
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} generic requests -> {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
