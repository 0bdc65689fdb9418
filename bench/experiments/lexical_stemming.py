"""Does a light English stemmer make L0's word evidence match more of what users type?

L0's content words (``runtime/lexical.py``) match exactly, after a plural "s" is dropped:
"crashed" is not "crash", "logged" not "log", "restoring" not "restore", "policies" not
"policy". This replays the four few-shot dev sets with every content word stemmed (the
Porter-like step: "-ies" to "-y", "-ing" and "-ed" dropped from words of five letters or
more with a doubled final consonant undone, a final "e" dropped from words of four or
more), with the calibration prior refitted the same way first (as ``router-mesh bench
prior`` does), against the shipped words on the same footing. Not shipped unless it
measures better; docs/benchmarks.md has the result.

    .venv/bin/python bench/experiments/lexical_stemming.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from routermesh.runtime import embedding, lexical
from routermesh_bench import prior
from routermesh_bench.fewshot_sets import refit_prior, replay

_SHIPPED = lexical.content_words
_DOUBLED_KEPT = ("ll", "ss", "zz", "ff")


def stem(word: str) -> str:
    """The word's light stem (see the module's docstring)."""
    if len(word) > 4 and word.endswith("ie"):  # "policies" arrives as "policie"
        return word[:-2] + "y"
    for suffix in ("ing", "ed"):
        if len(word) >= 5 + len(suffix) - 2 and word.endswith(suffix):
            root = word[: -len(suffix)]
            if len(root) >= 3:
                if root[-1] == root[-2] and root[-2:] not in _DOUBLED_KEPT:
                    root = root[:-1]
                word = root
                break
    if len(word) >= 4 and word.endswith("e"):
        word = word[:-1]
    return word


def stemmed_words(text: str) -> frozenset[str]:
    return frozenset(stem(word) for word in _SHIPPED(text))


def use_stems() -> None:
    # every module that holds the function by name
    lexical.content_words = stemmed_words
    embedding.content_words = stemmed_words  # type: ignore[attr-defined]
    prior.content_words = stemmed_words  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--thresholds", default="0.4,0.5,0.6")
    parser.add_argument("--shipped", action="store_true", help="the shipped words, for reference")
    args = parser.parse_args()
    if not args.shipped:
        use_stems()
        fitted = refit_prior(args.datasets, args.models_dir)
        sys.stdout.write(f"prior: in scope {fitted['in_scope']} correct {fitted['correct']}\n")
    scratch = Path(tempfile.mkdtemp(prefix="lexical-stemming-"))
    thresholds = tuple(float(x) for x in args.thresholds.split(","))
    label = "shipped " if args.shipped else "stemmed "
    replay(label, args.datasets, scratch, args.models_dir, thresholds)


if __name__ == "__main__":
    main()
