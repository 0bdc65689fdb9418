"""How much of a route's typicality should L0's in-scope model take off the best similarity?

A route's typicality (``example_index.route_typicality``) is the mean similarity of its
examples to their nearest other piece of the route's evidence, less the table's mean over
routes: ten examples that say one thing one way sit close together, ten that spread over
a server's job do not, and a request for the first route lands nearer its examples than
a request for the second. For each weight this refits the calibration prior with it (as
``router-mesh bench prior`` does) and replays the four few-shot dev sets through
``router-mesh check-table`` (L0 in-process, as the runs in bench/results/fewshot/ built
it), printing routed accuracy / coverage / out-of-scope escalated / multi-step escalated
at each threshold. Weight 0 is L0 without typicality. docs/benchmarks.md has the result.

    .venv/bin/python bench/experiments/route_typicality.py --weights 0,0.25,0.5,0.75,1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from routermesh.runtime import calibration
from routermesh_bench.fewshot_sets import SETS, refit_prior, replay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--sets", default=",".join(SETS), help="default: %(default)s")
    parser.add_argument("--thresholds", default="0.4,0.5,0.6")
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="route-typicality-"))
    thresholds = tuple(float(x) for x in args.thresholds.split(","))
    for weight in (float(w) for w in args.weights.split(",")):
        calibration.TYPICALITY_WEIGHT = weight
        fitted = refit_prior(args.datasets, args.models_dir)
        sys.stdout.write(f"weight {weight:g}: prior in scope {fitted['in_scope']}\n")
        replay(
            f"weight {weight:g} ",
            args.datasets,
            scratch,
            args.models_dir,
            thresholds,
            sets=args.sets.split(","),
        )


if __name__ == "__main__":
    main()
