"""Does SmolLM2-135M fine-tuned on a RouteTable beat L0? (the seed's "fine-tune SmolLM on
my routing vocabulary"; measured, not shipped: see docs/benchmarks.md).

The L1 model is dequantized from the packaged GGUF into PyTorch (transformers' GGUF
loader), then trained to answer "Request: <text>\\nServer:" with the route's name, on the
table's examples and each route's description. Every route name is scored by its
log-probability; reported on the in-scope rows of an eval file: top-1 before and after
training, top-1 as a judge among L0's three best routes, L0's own top-1 on the same rows,
and how well the top probability tells in-scope from out-of-scope rows (AUC).

Needs transformers, gguf and accelerate beside the train extra's torch, e.g.
    .venv/bin/pip install --target /tmp/ftlib --no-deps "transformers>=4.50,<5" gguf \\
        accelerate huggingface_hub regex
    PYTHONPATH=/tmp/ftlib .venv/bin/python bench/experiments/finetune_l1.py \\
        -f samples/homelab --eval bench/data/homelab-dev.jsonl --epochs 4
(transformers 4.57 pins tokenizers <= 0.23.0; relax that line of its
dependency_versions_table.py when the venv has a newer one.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.labelled import LabelledRequest, read_labelled
from routermesh.local import LocalOptions, ensure_models, render
from routermesh.runtime.embedding import EmbeddingLayer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prompt(text: str) -> str:
    return f"Request: {text}\nServer:"


class RouteScorer:
    """The causal LM and each route name's tokens."""

    def __init__(self, models: Path, routes: list[str]) -> None:
        import torch  # noqa: PLC0415
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(models, gguf_file=GGUF)
        self.model = AutoModelForCausalLM.from_pretrained(
            models, gguf_file=GGUF, dtype=torch.float32
        )
        self.routes = routes
        self.ids = {r: self.tok(f" {r}\n", add_special_tokens=False)["input_ids"] for r in routes}

    def probabilities(self, text: str) -> np.ndarray:
        torch = self.torch
        head = self.tok(prompt(text))["input_ids"]
        seqs = [head + self.ids[r] for r in self.routes]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        with torch.no_grad():
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits, -1)
        scores = np.array(
            [
                sum(
                    logp[i, len(head) - 1 + j, token].item()
                    for j, token in enumerate(self.ids[route])
                )
                for i, route in enumerate(self.routes)
            ]
        )
        p = np.exp(scores - scores.max())
        return p / p.sum()

    def train(self, rows: list[tuple[str, str]], epochs: int, seed: int) -> float:
        torch = self.torch
        torch.manual_seed(seed)
        order = random.Random(seed)  # noqa: S311 - shuffling, not secrets
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=5e-5)
        self.model.train()
        started = time.monotonic()
        for epoch in range(epochs):
            order.shuffle(rows)
            total = 0.0
            for start in range(0, len(rows), 8):
                batch = [
                    (self.tok(prompt(t))["input_ids"], self.ids[r])
                    for t, r in rows[start : start + 8]
                ]
                width = max(len(a) + len(b) for a, b in batch)
                pad = [width - len(a) - len(b) for a, b in batch]
                ids = torch.tensor([a + b + [0] * p for (a, b), p in zip(batch, pad, strict=True)])
                att = torch.tensor(
                    [
                        [1] * (len(a) + len(b)) + [0] * p
                        for (a, b), p in zip(batch, pad, strict=True)
                    ]
                )
                labels = torch.tensor(
                    [[-100] * len(a) + b + [-100] * p for (a, b), p in zip(batch, pad, strict=True)]
                )
                loss = self.model(input_ids=ids, attention_mask=att, labels=labels).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                total += loss.item()
            steps = math.ceil(len(rows) / 8)
            seconds = time.monotonic() - started
            print(f"epoch {epoch + 1}: loss {total / steps:.3f}, {seconds:.0f} s", flush=True)  # noqa: T201
        self.model.eval()
        return time.monotonic() - started


def auc(positives: list[float], negatives: list[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return round(wins / (len(positives) * len(negatives)), 3)


def evaluate(scorer: RouteScorer, rows: list[tuple[LabelledRequest, list[str]]]) -> dict[str, Any]:
    started = time.monotonic()
    inside, top_in, top_out, judge_right, right = [], [], [], 0, 0
    for row, l0_top in rows:
        p = scorer.probabilities(row.text)
        if row.kind == "in_scope":
            inside.append(row)
            right += scorer.routes[int(p.argmax())] == row.route_name
            cands = [c for c in l0_top if c in scorer.routes]
            judge_right += max(cands, key=lambda c: p[scorer.routes.index(c)]) == row.route_name
            top_in.append(float(p.max()))
        else:
            top_out.append(float(p.max()))
    return {
        "in_scope_top1": round(right / len(inside), 3),
        "judge_among_l0_top3": round(judge_right / len(inside), 3),
        "auc_in_vs_out": auc(top_in, top_out),
        "ms_per_row": round(1000 * (time.monotonic() - started) / len(rows)),
    }


async def l0_ranking(
    files: list[Path], models: Path, rows: list[LabelledRequest]
) -> tuple[list[list[str]], list[tuple[str, str]], list[str]]:
    options = LocalOptions(files=files, models_dir=models, offline=True)
    config = ensure_models(render(options), options)
    l0 = next(x for x in config.layers if x.kind == "embedding")
    layer = EmbeddingLayer(l0, config, models)
    await layer.prepare()
    ranked = [[c.route for c in (await layer.classify(r.text)).candidates][:3] for r in rows]
    training = [(e, route.name) for route in config.routes for e in route.examples]
    training += [(route.description, route.name) for route in config.routes if route.description]
    routes = [r.name for r in config.routes if r.name != config.escalation.route]
    return ranked, training, routes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-f", "--filename", action="append", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, help="a seeded sample of the eval rows")
    parser.add_argument("--models-dir", default=".cache/models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()
    models = Path(args.models_dir)
    rows = [r for r in read_labelled(Path(args.eval)) if r.kind != "multi_step"]
    if args.limit and args.limit < len(rows):
        rows = random.Random(args.seed).sample(rows, args.limit)  # noqa: S311
    ranked, training, routes = asyncio.run(
        l0_ranking([Path(f) for f in args.filename], models, rows)
    )
    l0_right = [
        top[0] == r.route_name for r, top in zip(rows, ranked, strict=True) if r.kind == "in_scope"
    ]
    scorer = RouteScorer(models / "packaged", routes)
    paired = list(zip(rows, ranked, strict=True))
    result: dict[str, Any] = {
        "eval": args.eval,
        "rows": len(rows),
        "training_rows": len(training),
        "epochs": args.epochs,
        "l0_in_scope_top1": round(sum(l0_right) / len(l0_right), 3),
        "before": evaluate(scorer, paired),
    }
    print(json.dumps(result), flush=True)  # noqa: T201
    result["train_seconds"] = round(scorer.train(training, args.epochs, args.seed))
    result["after"] = evaluate(scorer, paired)
    print(json.dumps(result, indent=1))  # noqa: T201
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
