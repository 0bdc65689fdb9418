"""Does a second, static encoder beside MiniLM help L0 on small tables? (measured, not
shipped: see docs/benchmarks.md, "What was tried and not shipped").

WordLlama (PyPI ``wordllama`` 0.4.0) ships real weights in its wheel: 256-dimensional
token embeddings (``l2_supercat``) averaged over a message. Its vocabulary comes from large
language models' token tables, so it may know words ("lxc", "tx power") that a table's
examples never use. The ensemble concatenates MiniLM's unit vector scaled by sqrt(1 - w)
and WordLlama's scaled by sqrt(w): the cosine of two such vectors is (1 - w) x MiniLM's
cosine + w x WordLlama's, so L0's index, evidence, calibration and multi-step detection
run unchanged on it. With ``--prior``, L0's calibration prior is refitted for the
ensemble first (as ``router-mesh bench prior`` does for the shipped encoder).

Each set is replayed through ``router-mesh check-table``'s machinery (L0 in-process, the
cascade's own decision rule) on the few-shot runs' tables in bench/results/fewshot/ and
their eval rows, so weight 0 reproduces those runs' figures exactly.

    .venv/bin/pip install wordllama==0.4.0
    .venv/bin/python bench/experiments/ensemble_wordllama.py --weight 0.35 --prior
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

import routermesh.runtime.encoder as encoder_module
from routermesh_bench.fewshot_sets import refit_prior, replay


class WordLlama:
    """WordLlama's packaged tokenizer and token embeddings, mean-pooled, unit length (read
    from the wheel's files: its own loader looks for the tokenizer where the wheel does
    not put it and then tries the hub)."""

    def __init__(self) -> None:
        import wordllama  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: PLC0415
        from safetensors import safe_open  # noqa: PLC0415
        from tokenizers import Tokenizer  # noqa: PLC0415

        root = Path(wordllama.__file__).parent
        self.tokenizer = Tokenizer.from_file(
            str(root / "tokenizers/l2_supercat_tokenizer_config.json")
        )
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        with safe_open(str(root / "weights/l2_supercat_256.safetensors"), framework="np") as f:
            self.table = f.get_tensor("embedding.weight").astype(np.float32)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.table.shape[1]), dtype=np.float32)
        for row, text in enumerate(texts):
            ids = self.tokenizer.encode(text, add_special_tokens=False).ids
            if ids:
                vector = self.table[ids].mean(axis=0)
                out[row] = vector / max(float(np.linalg.norm(vector)), 1e-9)
        return out


def use_ensemble(weight: float) -> None:
    """Every L0 encoder of this process returns the weighted concatenation."""
    static = WordLlama()
    encode = encoder_module.Encoder.encode

    def ensemble(
        self: encoder_module.Encoder, texts: Sequence[str], batch: int = encoder_module.BATCH
    ) -> npt.NDArray[np.float32]:
        dense = encode(self, texts, batch)
        if not len(texts):
            return dense
        joined = np.concatenate(
            [np.sqrt(1 - weight) * dense, np.sqrt(weight) * static.encode(texts)], axis=1
        )
        return joined.astype(np.float32)

    encoder_module.Encoder.encode = ensemble  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weight", type=float, default=0.35, help="WordLlama's share (0: off)")
    parser.add_argument("--prior", action="store_true", help="refit the prior for it first")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--scratch", type=Path, help="where the eval rows go (a temp dir)")
    parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6")
    args = parser.parse_args()
    if args.weight:
        use_ensemble(args.weight)
    if args.prior:
        sys.stdout.write(f"prior: {refit_prior(args.datasets, args.models_dir)}\n")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="ensemble-wordllama-"))
    scratch.mkdir(parents=True, exist_ok=True)
    thresholds = tuple(float(x) for x in args.thresholds.split(","))
    replay("", args.datasets, scratch, args.models_dir, thresholds)


if __name__ == "__main__":
    main()
