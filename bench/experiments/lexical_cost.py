"""What L0's lexical evidence costs per decision: the index's judgement of the same vectors
with and without the message's words, and the words' extraction and scoring alone, on
the tool table (40 routes, the largest few-shot vocabulary), in-process.

    .venv/bin/python bench/experiments/lexical_cost.py [--rows 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from routermesh.labelled import read_labelled
from routermesh.runtime.embedding import EmbeddingLayer
from routermesh.runtime.lexical import content_words
from routermesh.table_check import CheckOptions, l0_config
from routermesh_bench.fewshot_sets import eval_file, stack_files


def _per_call_ms(call: Callable[[int], object], rows: int, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for i in range(rows):
            call(i)
    return (time.perf_counter() - started) / (repeats * rows) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    config, layer_config = l0_config(
        CheckOptions(files=stack_files("tools"), models_dir=args.models_dir, offline=True)
    )
    layer = EmbeddingLayer(layer_config, config, args.models_dir)
    asyncio.run(layer.prepare())
    index, encoder = layer.index, layer._encoder
    if index is None or index.vocabulary is None or encoder is None:
        raise SystemExit(f"L0 could not be built: {layer.error}")
    vocabulary = index.vocabulary
    scratch = Path(tempfile.mkdtemp())
    texts = [r.text for r in read_labelled(eval_file("tools", args.datasets, scratch))]
    texts = texts[: args.rows]
    vectors = encoder.encode(texts)
    words = [content_words(text) for text in texts]
    n, repeats = len(texts), args.repeats
    plain = _per_call_ms(lambda i: index.classify(vectors[i]), n, repeats)
    lexical = _per_call_ms(lambda i: index.classify(vectors[i], words=words[i]), n, repeats)
    alone = _per_call_ms(lambda i: vocabulary.judge(content_words(texts[i]), 0), n, repeats)
    sys.stdout.write(
        f"{n} messages x {repeats}, {len(vocabulary.users)} words in the evidence: judgement "
        f"{plain:.3f} ms without the words, {lexical:.3f} ms with them; the words alone "
        f"{alone:.3f} ms\n"
    )


if __name__ == "__main__":
    main()
