"""Does L1's small language model know a table's jargon better than L0's encoder? L1
(SmolLM2-135M) as a noisy-channel scorer of L0's out-of-scope decision, measured and
not shipped (docs/benchmarks.md, "What was tried and not shipped").

A prompted judge asks the model which route a request is for, and at this size that is
near chance. A channel scorer asks the model only what a language model is trained to
do: how likely the request's words are after a context. Each of L0's best few routes is
a context ("Requests sent to the unifi server. <description>", then its first ten
examples as a list), and so is one of generic requests (ten rows of the packaged
generic-request corpus). The score is the request's per-token log-likelihood after its
best route's context less that after the generic context: a request in the fleet's words
("turn on band steering for HomeNet", "roll over the filebeat-8.x alias now") is likelier
after a route's examples than after a list of everyday requests, whatever the encoder
makes of the words.

``score`` runs L0 in-process (as ``router-mesh check-table`` builds it from the
few-shot run's table, so its verdicts reproduce the runs') and the model (dequantized
from the packaged GGUF with transformers, each context's keys and values computed once)
over a set's rows, and writes them with L0's in-scope probability, route confidence and
verdict. ``replay`` reads such files and reports, per set:

- the AUC of in-scope against out-of-scope rows for L0's in-scope probability, the
  channel score, and the two added at several weights (the logit of L0's probability plus
  w x the score), and the oracle ceiling of coverage_ceiling.py (in-scope rows kept, and
  kept with L0's route right, a message L0 split as multi-step not right, at the issue's
  out-of-scope target);
- routed accuracy / coverage / out-of-scope / multi-step escalated at several thresholds
  for L0 as shipped, L0's in-scope logit refitted alone, and refitted with the score
  (a logistic model fitted on the ``--fit`` sets' in-scope and out-of-scope rows, both
  classes and every set weighing the same). A message L0 split as multi-step stays
  escalated, as does one whose nearest examples are the escalation route's; every other
  row is routed when the new in-scope probability times L0's P(route right | in scope)
  (its confidence over its in-scope probability: the base encoder's, not a trained
  head's) reaches the threshold. Coverage is check-table's: in-scope rows routed.

The generic context's description names music and travel, which some tool-table routes
serve; its rows are the corpus's first ten after a seeded shuffle. Neither was tuned.

Needs transformers, gguf and accelerate beside the train extra's torch (as
finetune_l1.py, whose docstring says how to relax transformers' tokenizers pin):

    .venv/bin/pip install --target /tmp/ftlib --no-deps "transformers>=4.50,<5" gguf \\
        accelerate "huggingface_hub<1.0" regex safetensors
    PYTHONPATH=/tmp/ftlib .venv/bin/python bench/experiments/channel_scores.py score \\
        --set homelab --out /tmp/channel/homelab.json
    PYTHONPATH=/tmp/ftlib .venv/bin/python bench/experiments/channel_scores.py score \\
        --set tools --top 3 --out /tmp/channel/tools.json
    PYTHONPATH=/tmp/ftlib .venv/bin/python bench/experiments/channel_scores.py score \\
        --set homelab-test --out /tmp/channel/homelab-test.json
    .venv/bin/python bench/experiments/channel_scores.py replay --fit homelab,tools \\
        /tmp/channel/homelab.json /tmp/channel/tools.json /tmp/channel/homelab-test.json \\
        --out bench/results/experiments/channel-scores.txt
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.labelled import read_labelled
from routermesh.runtime import generic_requests
from routermesh.runtime.calibration import fit_logistic, logistic, logit
from routermesh.runtime.lexical import content_words
from routermesh.table_check import CheckOptions, l0_config
from routermesh_bench.fewshot_sets import HELD_OUT, SETS, eval_file, stack_files

sys.path.insert(0, str(Path(__file__).parent))
from l0_decision_variants import _auc, _layer, _parts

SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"
GENERIC_CONTEXT = (
    "assistant",
    "A general personal assistant: everyday questions, reminders, music, weather, "
    "shopping, travel.",
)
TARGETS = {"homelab": 0.9, "homelab-test": 0.9, "tools": 0.8, "tools-test": 0.8}
"""Set -> the issue's out-of-scope target (the oracle cut's)."""


def context(name: str, description: str, examples: list[str]) -> str:
    lines = "".join(f"\n- {example}" for example in examples[:10])
    return f"Requests sent to the {name} server. {description}{lines}\n-"


class ChannelScorer:
    """log P(request | context) under the causal LM, each context's cache computed once."""

    def __init__(self, models: Path, gguf: str, contexts: dict[str, str]) -> None:
        import torch  # noqa: PLC0415
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        torch.set_num_threads(2)
        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(models, gguf_file=gguf)
        self.model = AutoModelForCausalLM.from_pretrained(
            models, gguf_file=gguf, dtype=torch.float32
        ).eval()
        self.contexts = contexts
        self._cache: dict[str, tuple[Any, Any]] = {}

    def tokens(self, text: str) -> list[int]:
        ids: list[int] = self.tok(" " + text + "\n", add_special_tokens=False)["input_ids"]
        return ids

    def _prefix(self, key: str) -> tuple[Any, Any]:
        if key not in self._cache:
            ids = self.tok(self.contexts[key])["input_ids"]
            with self.torch.no_grad():
                out = self.model(input_ids=self.torch.tensor([ids]), use_cache=True)
            self._cache[key] = (out.past_key_values, self.torch.log_softmax(out.logits[0, -1], -1))
        return self._cache[key]

    def log_likelihood(self, key: str, ids: list[int]) -> float:
        torch = self.torch
        past, first = self._prefix(key)
        with torch.no_grad():
            out = self.model(
                input_ids=torch.tensor([ids]), past_key_values=copy.deepcopy(past), use_cache=True
            )
        logp = torch.log_softmax(out.logits[0], -1)
        return float(first[ids[0]]) + sum(float(logp[i - 1, t]) for i, t in enumerate(ids) if i)


def score(args: argparse.Namespace) -> None:
    SETS.update(HELD_OUT)
    models = args.models_dir
    layer, escalation = _layer(args.set, models)
    index, encoder = _parts(layer)
    options = CheckOptions(files=stack_files(args.set), models_dir=models, offline=True)
    config, _ = l0_config(options)
    routes = {r.name: r for r in config.routes if r.name != escalation}
    contexts = {
        name: context(name, route.description or "", list(route.examples))
        for name, route in routes.items()
    }
    generic = generic_requests.load(["hwu64", "clinc150"])
    random.Random(0).shuffle(generic)  # noqa: S311 - a seeded draw, not secrets
    contexts["_generic"] = context(*GENERIC_CONTEXT, generic[:10])
    scorer = ChannelScorer(models / "packaged", args.model, contexts)
    rows = read_labelled(eval_file(args.set, args.datasets, Path(tempfile.mkdtemp())))
    out: list[dict[str, Any]] = []
    started, spent = time.monotonic(), []
    for i, row in enumerate(rows):
        verdict = asyncio.run(layer.classify(row.text))
        judged = index.classify(encoder.encode([row.text])[0], words=content_words(row.text))
        candidates = [c.route for c in judged.candidates if c.route != escalation][: args.top]
        ids = scorer.tokens(row.text)
        t0 = time.monotonic()
        scores = {key: scorer.log_likelihood(key, ids) for key in [*candidates, "_generic"]}
        spent.append(1000 * (time.monotonic() - t0))
        out.append(
            {
                "text": row.text,
                "kind": row.kind,
                "route": row.route_name,
                "tokens": len(ids),
                "scores": scores,
                "candidates": candidates,
                "l0_route": judged.route,
                "l0_in_scope": judged.in_scope,
                "l0_confidence": judged.confidence,
                "cause": verdict.cause.value if verdict.cause else None,
            }
        )
        if (i + 1) % 100 == 0:
            _err(f"{args.set}: {i + 1}/{len(rows)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    timing = {
        "seconds": round(time.monotonic() - started, 1),
        "contexts": args.top + 1,
        "p50_ms": round(float(np.percentile(spent, 50)), 1),
        "p95_ms": round(float(np.percentile(spent, 95)), 1),
    }
    document = {"set": args.set, "model": args.model, "timing": timing, "rows": out}
    args.out.write_text(json.dumps(document))
    _err(f"{args.set}: {len(rows)} rows, {timing}")


def channel(row: dict[str, Any]) -> float:
    """The request's per-token log-likelihood after its best candidate's context less
    after the generic context."""
    scores = row["scores"]
    best = max(scores[c] for c in row["candidates"])
    return float((best - scores["_generic"]) / row["tokens"])


def _channel_route(row: dict[str, Any]) -> str:
    return str(max(row["candidates"], key=lambda c: float(row["scores"][c])))


def _joined(row: dict[str, Any], weight: float) -> float:
    return logit(row["l0_in_scope"]) + weight * channel(row)


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _ceiling(
    rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], float], target: float
) -> str:
    inside = [r for r in rows if r["kind"] == "in_scope"]
    outside = sorted(key(r) for r in rows if r["kind"] == "out_of_scope")
    passing = math.floor(len(outside) * (1 - target) + 1e-9)
    cut = outside[len(outside) - 1 - passing]
    kept = [r for r in inside if key(r) > cut]
    # A message L0 split as multi-step is kept but not routed right (coverage_ceiling.py).
    right = sum(r["l0_route"] == r["route"] and r["cause"] is None for r in kept)
    return f"kept {100 * len(kept) / len(inside):5.1f} %, right {100 * right / len(inside):5.1f} %"


def fit(sets: list[list[dict[str, Any]]], with_channel: bool) -> list[float]:
    """Logistic in-scope model on logit(L0's in-scope) [and the channel score]; every
    set and both classes weigh the same."""
    xs, ys, ws = [], [], []
    for rows in sets:
        labelled = [r for r in rows if r["kind"] in ("in_scope", "out_of_scope")]
        n_in = sum(r["kind"] == "in_scope" for r in labelled)
        for r in labelled:
            inside = r["kind"] == "in_scope"
            xs.append([logit(r["l0_in_scope"])] + ([channel(r)] if with_channel else []))
            ys.append(inside)
            ws.append(0.5 / (n_in if inside else len(labelled) - n_in) / len(sets))
    return fit_logistic(xs, ys, weights=ws)


def figures(
    rows: list[dict[str, Any]], in_scope: Callable[[dict[str, Any]], float], threshold: float
) -> str:
    routed = right = inside = inside_routed = outside = outside_esc = multi = multi_esc = 0
    for r in rows:
        route = None
        # A multi-step split, or the escalation route's own examples nearest, stays escalated.
        if r["cause"] is None:
            p_right = r["l0_confidence"] / r["l0_in_scope"] if r["l0_in_scope"] > 0 else 0.0
            if in_scope(r) * p_right >= threshold:
                route = r["l0_route"]
        if route is not None:
            routed += 1
            right += r["kind"] == "in_scope" and route == r["route"]
        if r["kind"] == "in_scope":
            inside += 1
            inside_routed += route is not None
        elif r["kind"] == "out_of_scope":
            outside += 1
            outside_esc += route is None
        else:
            multi += 1
            multi_esc += route is None
    values = (
        100 * right / max(routed, 1),
        100 * inside_routed / inside,
        100 * outside_esc / max(outside, 1),
        100 * multi_esc / max(multi, 1),
    )
    return " / ".join(f"{v:5.1f}" for v in values)


def replay(args: argparse.Namespace) -> None:
    loaded, documents = {}, {}
    for path in args.files:
        data = json.loads(path.read_text())
        loaded[data["set"]], documents[data["set"]] = data["rows"], data
    fit_on = [loaded[name] for name in args.fit.split(",")]
    alone, joined = fit(fit_on, False), fit(fit_on, True)
    models = sorted({d["model"] for d in documents.values()})
    lines = [
        f"channel_scores.py replay --fit {args.fit}; model {', '.join(models)}",
        "figures: routed accuracy / coverage (in-scope rows routed) / out-of-scope "
        "escalated / multi-step escalated",
        f"refitted alone: in scope = sigmoid({alone[0]:.3f} logit(L0) + {alone[1]:.3f})",
        f"with the channel score: in scope = sigmoid({joined[0]:.3f} logit(L0) + "
        f"{joined[1]:.3f} channel + {joined[2]:.3f})",
    ]

    def shipped(r: dict[str, Any]) -> float:
        return float(r["l0_in_scope"])

    def refit(r: dict[str, Any]) -> float:
        return logistic(alone, [logit(r["l0_in_scope"])])

    def combined(r: dict[str, Any]) -> float:
        return logistic(joined, [logit(r["l0_in_scope"]), channel(r)])

    for name, rows in loaded.items():
        inside = [r for r in rows if r["kind"] == "in_scope"]
        outside = [r for r in rows if r["kind"] == "out_of_scope"]
        target = TARGETS.get(name, 0.9)
        lines.append(
            f"\n{name}: {len(inside)} in scope, {len(outside)} out of scope, "
            f"{len(rows) - len(inside) - len(outside)} multi-step; top-1 of the channel "
            f"score among L0's candidates "
            f"{100 * np.mean([_channel_route(r) == r['route'] for r in inside]):.1f} %, "
            f"L0's {100 * np.mean([r['l0_route'] == r['route'] for r in inside]):.1f} %"
        )
        timing = documents[name].get("timing")
        unsure = [r for r in rows if r["cause"] is None and 0.05 <= r["l0_in_scope"] <= 0.95]
        lines.append(
            f"  the model's {timing['contexts']} contexts per row: p50 / p95 "
            f"{timing['p50_ms']:.0f} / {timing['p95_ms']:.0f} ms; rows L0 is neither sure of "
            f"nor sure against (in scope 0.05-0.95, not split): "
            f"{100 * len(unsure) / len(rows):.0f} %"
            if timing
            else "  (no timing in this file)"
        )
        jargon = sorted(
            (r for r in inside if r["l0_in_scope"] < 0.3),
            key=lambda r: -channel(r),
        )[:3]
        for r in jargon:
            lines.append(
                f"  in scope, L0 unsure: {r['text']!r}: L0 in scope {r['l0_in_scope']:.2f}, "
                f"channel {channel(r):+.2f}"
            )
        keys: dict[str, Callable[[dict[str, Any]], float]] = {
            "L0's in-scope logit": lambda r: logit(r["l0_in_scope"]),
            "channel score": channel,
        }
        for weight in (0.5, 1.0, 2.0):
            keys[f"L0 logit + {weight:g} x channel"] = partial(_joined, weight=weight)
        for label, key in keys.items():
            auc = _auc(np.array([key(r) for r in inside]), np.array([key(r) for r in outside]))
            lines.append(
                f"  {label:26s} AUC {auc:.3f}; oracle cut at {100 * target:.0f} % out of "
                f"scope escalated: {_ceiling(rows, key, target)}"
            )
        for threshold in args.thresholds:
            lines.append(
                f"  at {threshold}: shipped {figures(rows, shipped, threshold)} | refitted alone "
                f"{figures(rows, refit, threshold)} | with the channel score "
                f"{figures(rows, combined, threshold)}"
            )
    text = "\n".join(lines)
    sys.stdout.write(text + "\n")
    if args.out:
        args.out.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("score", help="score a set's rows with L0 and the model")
    run.add_argument("--set", required=True, help="homelab, tools, homelab-test, tools-test")
    run.add_argument("--top", type=int, default=4, help="L0's best routes scored")
    run.add_argument("--model", default=SMOLLM, help="a GGUF under the models dir's packaged/")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    run.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    rep = sub.add_parser("replay", help="AUC, ceilings and figures from score files")
    rep.add_argument("files", type=Path, nargs="+")
    rep.add_argument("--fit", default="homelab,tools", help="sets the models are fitted on")
    rep.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    rep.add_argument("--out", type=Path)
    args = parser.parse_args()
    score(args) if args.command == "score" else replay(args)


if __name__ == "__main__":
    main()
