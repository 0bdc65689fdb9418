"""Does L0's calibration prior fit a 40-route table better when it is also drawn from
tables that large?

The shipped prior (``router-mesh bench prior``) is drawn from the CLINC150 and HWU64
*train* splits with their routes as routes: tables of 4 to 16 routes. A tool table has
40, nearer each other than CLINC150's domains are. ``--by-intent`` tables take the train
files' intents as routes (CLINC150's 150, HWU64's 64; an intent's name in words as its
description), ``--min-routes`` to ``--max-routes`` of them per table, and the other
intents' rows as requests no route handles. Each prior (the shipped draw alone, the
intent draw alone, both) is installed in-process and the few-shot sets are replayed as
``router-mesh check-table`` runs them; the held-out sets only when named in ``--sets``.

    .venv/bin/python bench/experiments/prior_table_sizes.py --tables 10

Not shipped (bench/results/experiments/prior-table-sizes.txt): at 0.5 intent tables
cost every dev set coverage (homelab 27 points), and on the tool table at 0.4 they trade
multi-step escalation for out-of-scope escalation at the same coverage. Likely why:
their absent intents are near the drawn ones (alarm_set beside alarm_query), so the
in-scope model learns to doubt similar requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from routermesh.runtime.encoder import Encoder
from routermesh_bench import prior
from routermesh_bench.fewshot_sets import HELD_OUT, SETS, check_set, install_prior
from routermesh_bench.tables import read_descriptions


def _judge(args: argparse.Namespace, encoder: Encoder, *, by_intent: bool) -> prior.Judged:
    sources = [
        prior.PriorSource(
            args.datasets / f"{name}/train.jsonl",
            read_descriptions(Path(f"bench/data/descriptions/{name}.json")),
            by_intent=by_intent,
        )
        for name in ("clinc150", "hwu64")
    ]
    if not by_intent:
        # The shipped draw: ``router-mesh bench prior``'s defaults.
        return prior.judge_tables(sources, encoder, tables=10, k=10, seed=100)
    return prior.judge_tables(
        sources,
        encoder,
        tables=args.tables,
        k=10,
        seed=args.seed,
        min_routes=args.min_routes,
        max_routes=args.max_routes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=10, help="intent tables per source")
    parser.add_argument("--min-routes", type=int, default=20)
    parser.add_argument("--max-routes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--sets", default=",".join(SETS), help="default: %(default)s")
    parser.add_argument("--thresholds", default="0.4,0.5,0.6")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    SETS.update(HELD_OUT)
    encoder = Encoder(args.models_dir / "packaged/all-MiniLM-L6-v2-int8")
    shipped = _judge(args, encoder, by_intent=False)
    intents = _judge(args, encoder, by_intent=True)
    scratch = Path(tempfile.mkdtemp(prefix="prior-sizes-"))
    thresholds = tuple(float(x) for x in args.thresholds.split(","))
    for label, judged in (("shipped", shipped), ("intents", intents), ("both", shipped + intents)):
        fitted = prior.fit_judged(judged)
        install_prior(fitted)
        sys.stdout.write(f"{label}: in_scope {fitted['in_scope']} correct {fitted['correct']}\n")
        for name in args.sets.split(","):
            figures = check_set(name, args.datasets, scratch, args.models_dir, thresholds)
            sys.stdout.write(f"  {label:8s} {name:12s} {figures}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
