"""``router-mesh bench``: the benchmark commands' arguments (heavy imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from routermesh.runtime.contract.config import MAX_ORCHESTRATOR_WORKERS

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from routermesh_bench.quality import RunOptions

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _targets(pairs: list[str]) -> dict[str, float]:
    targets = {}
    for pair in pairs:
        layer, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or not layer or not 0.0 < number <= 1.0:
            raise argparse.ArgumentTypeError(f"--target expects LAYER=ACCURACY (0-1], got {pair!r}")
        targets[layer] = number
    return targets


def _share(value: str) -> float:
    """A share of traffic strictly between 0 and 1."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {value!r}")
    return number


def _settings(pairs: list[str]) -> dict[str, dict[str, object]]:
    """``LAYER.FIELD=VALUE`` pairs (VALUE as YAML: numbers, booleans, strings; FIELD may be
    a dotted path such as ``multiStep.threshold``)."""
    import yaml  # noqa: PLC0415

    settings: dict[str, dict[str, object]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        layer, *path = key.split(".")
        if not sep or not layer or not path or not all(path):
            raise argparse.ArgumentTypeError(f"--set expects LAYER.FIELD=VALUE, got {pair!r}")
        node: dict[str, object] = settings.setdefault(layer, {})
        for name in path[:-1]:  # l0.multiStep.threshold: a nested field
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise argparse.ArgumentTypeError(f"--set {key}: {name} is not an object")
            node = child
        node[path[-1]] = yaml.safe_load(value)
    return settings


def _run_options(args: argparse.Namespace) -> RunOptions:
    from routermesh_bench.quality import RunOptions  # noqa: PLC0415

    return RunOptions(
        train=Path(args.train) if args.train else None,
        eval=Path(args.eval),
        out=Path(args.out),
        limit=args.limit,
        seed=args.seed,
        examples_per_route=args.examples_per_route,
        concurrency=args.concurrency,
        port=args.port,
        models_dir=Path(args.models_dir),
        thresholds=Path(args.thresholds) if args.thresholds else None,
        disable=tuple(args.disable),
        all_layers=not args.no_all_layers,
        head_epochs=args.head,
        few_shot=args.few_shot,
        descriptions=Path(args.descriptions) if args.descriptions else None,
        routetable=Path(args.routetable) if args.routetable else None,
        absent=args.absent,
        multi=args.multi,
        settings=_settings(args.set),
    )


def _check_inputs(args: argparse.Namespace) -> str | None:
    for name in ("train", "eval", "records", "thresholds", "descriptions", "routetable"):
        value = getattr(args, name, None)
        if value and not Path(value).is_file():
            return f"--{name}: no such file: {value}"
    if args.limit is not None and args.limit < 1:
        return "--limit must be at least 1"
    if not args.train and not args.routetable and not args.records:
        return "give --train (a labelled JSONL) or --routetable (a RouteTable YAML)"
    if args.few_shot is not None and not args.train:
        return "--few-shot draws its examples from --train"
    if args.absent < 0 or args.multi < 0:
        return "--absent and --multi must not be negative"
    return None


def _beside(args: argparse.Namespace) -> AbstractContextManager[None]:
    """The commands ``--also`` starts beside the bench router (none: as before)."""
    from routermesh_bench.stack import beside  # noqa: PLC0415

    return beside(args.also, tools_timeout=args.tools_timeout)


def cmd_quality(args: argparse.Namespace) -> int:
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh_bench.quality import run_quality  # noqa: PLC0415

    problem = _check_inputs(args)
    if problem:
        sys.stderr.write(f"bench quality: {problem}\n")
        return EXIT_USAGE
    configure_logging(args.log_level)
    try:
        with _beside(args):
            summary = run_quality(
                _run_options(args),
                reuse=Path(args.records) if args.records else None,
            )
    except Exception as error:
        sys.stderr.write(f"bench quality: {error}\n")
        return EXIT_INVALID
    sys.stdout.write(
        f"n={summary['n']} routed_accuracy={summary['routed_accuracy']} "
        f"coverage={summary['coverage']} oos_escalated={summary['oos_escalated']} "
        f"multi_step_escalated={summary['multi_step_escalated']} "
        f"latency_ms p50={summary['latency_ms']['p50']} p95={summary['latency_ms']['p95']} "
        f"ece={summary['ece']} -> {Path(args.out) / 'quality.json'}\n"
    )
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh_bench.quality import run_calibrate  # noqa: PLC0415

    problem = _check_inputs(args)
    if problem:
        sys.stderr.write(f"bench calibrate: {problem}\n")
        return EXIT_USAGE
    configure_logging(args.log_level)
    try:
        with _beside(args):
            result = run_calibrate(
                _run_options(args),
                {k: v for item in args.target for k, v in item.items()},
                per_route=args.per_route,
                min_samples=args.min_samples,
                reuse=Path(args.records) if args.records else None,
                max_step=args.max_step,
                confidence=not args.no_confidence_calibration,
                oos_target=args.oos_target,
                oos_share=args.oos_share,
            )
    except Exception as error:
        sys.stderr.write(f"bench calibrate: {error}\n")
        return EXIT_INVALID
    for layer, fit in result["layers"].items():
        reached = "" if fit["reached"] else " (target not reached: routes only at certainty)"
        sys.stdout.write(
            f"{layer}: threshold {fit['threshold']} for {fit['target']:.0%} accuracy{reached}\n"
        )
    sys.stdout.write(
        f"expected: {result['expected']} (before: {result['before']}) -> "
        f"{Path(args.out) / 'routermesh-patch.yaml'}\n"
    )
    return EXIT_OK


def cmd_perf(args: argparse.Namespace) -> int:
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh_bench.perf import PerfOptions, run_perf  # noqa: PLC0415

    configure_logging(args.log_level)
    try:
        perf = run_perf(
            PerfOptions(
                files=[Path(f) for f in (args.filename or ["samples/homelab"])],
                messages=Path(args.messages),
                out=Path(args.out),
                requests=args.requests,
                cached_requests=args.cached_requests,
                port=args.port,
                models_dir=Path(args.models_dir),
                seed=args.seed,
                disable=tuple(args.disable),
                workers=args.workers,
                redis_url=args.redis_url,
            )
        )
    except Exception as error:
        sys.stderr.write(f"bench perf: {error}\n")
        return EXIT_INVALID
    sys.stdout.write(f"latency by layer: {perf['latency_by_layer']} -> {args.out}/perf.json\n")
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh_bench.load import LoadOptions, run_load  # noqa: PLC0415

    configure_logging(args.log_level)
    try:
        result = run_load(
            LoadOptions(
                files=[Path(f) for f in (args.filename or ["samples/homelab"])],
                messages=Path(args.messages),
                injection=Path(args.injection),
                out=Path(args.out),
                requests=args.requests,
                concurrency=args.concurrency,
                unique_share=args.unique_share,
                soak_rounds=args.soak_rounds,
                soak_requests=args.soak_requests,
                port=args.port,
                models_dir=Path(args.models_dir),
                seed=args.seed,
                deadline_s=args.deadline,
                disable=tuple(args.disable),
                workers=args.workers,
                redis_url=args.redis_url,
            )
        )
    except Exception as error:
        sys.stderr.write(f"bench load: {error}\n")
        return EXIT_INVALID
    bounded = result["bounded"]
    sys.stdout.write(
        f"{bounded['requests']} requests: {bounded['server_errors']} 5xx, {bounded['lost']} lost, "
        f"{bounded['duplicated']} duplicated, p95 {bounded['latency_ms']['p95']} ms "
        f"-> {args.out}/load.json\n"
    )
    failed = bounded["server_errors"] or bounded["lost"] or bounded["duplicated"]
    return EXIT_INVALID if failed else EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
    from routermesh.runtime.contract.config import AdaptiveConfig  # noqa: PLC0415
    from routermesh_bench.adapt_replay import ReplayOptions, replay  # noqa: PLC0415
    from routermesh_bench.records import dumps, read_records  # noqa: PLC0415
    from routermesh_bench.stack import ESCALATION_ROUTE  # noqa: PLC0415

    records_path = Path(args.records)
    run = records_path.parent / "run.json"
    if not records_path.is_file() or not run.is_file():
        sys.stderr.write(f"bench adapt: needs {records_path} and {run} (a quality run)\n")
        return EXIT_USAGE
    try:
        settings = AdaptiveConfig(
            target=args.target,
            min_samples=args.min_samples,
            max_step=args.max_step,
            floor=args.floor,
            ceiling=args.ceiling,
        )
        about = json.loads(run.read_text())
        thresholds = {layer["name"]: layer["threshold"] for layer in about["layers"]}
        result = replay(
            list(read_records(records_path)),
            thresholds,
            ESCALATION_ROUTE,
            ReplayOptions(
                layer=args.layer,
                start=args.start,
                settings=settings,
                share=args.share,
                batch=args.batch,
                seed=args.seed,
            ),
        )
    except (OSError, ValueError, KeyError) as error:
        sys.stderr.write(f"bench adapt: {error}\n")
        return EXIT_INVALID
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"adapt-{args.layer}-from-{args.start:g}.json"
    (out / name).write_text(dumps({**result, "records": str(records_path)}))
    sys.stdout.write(
        f"{args.layer}: {result['start']:g} -> {result['end']:g} ({result['state']}; "
        f"{result['outcomes']} outcomes); other half before {result['other_half_before']}, "
        f"after {result['other_half_after']} -> {out / name}\n"
    )
    return EXIT_OK


def cmd_prior(args: argparse.Namespace) -> int:
    from routermesh.runtime.encoder import Encoder, EncoderError  # noqa: PLC0415
    from routermesh_bench.prior import PriorSource, fit_prior  # noqa: PLC0415
    from routermesh_bench.records import dumps  # noqa: PLC0415
    from routermesh_bench.tables import TableError, read_descriptions  # noqa: PLC0415

    if len(args.descriptions) not in (0, len(args.train)):
        sys.stderr.write("bench prior: give one --descriptions per --train, or none\n")
        return EXIT_USAGE
    for path in [*args.train, *args.descriptions]:
        if not Path(path).is_file():
            sys.stderr.write(f"bench prior: no such file: {path}\n")
            return EXIT_USAGE
    try:
        sources = [
            PriorSource(
                train=Path(train),
                descriptions=read_descriptions(Path(args.descriptions[i]))
                if args.descriptions
                else {},
            )
            for i, train in enumerate(args.train)
        ]
        encoder = Encoder(Path(args.encoder))
        result = fit_prior(sources, encoder, tables=args.tables, k=args.k, seed=args.seed)
    except (OSError, ValueError, TableError, EncoderError) as error:
        sys.stderr.write(f"bench prior: {error}\n")
        return EXIT_INVALID
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prior.json").write_text(dumps({**result, "encoder": args.encoder}))
    sys.stdout.write(
        f"in_scope {result['in_scope']} correct {result['correct']} -> {out / 'prior.json'}\n"
    )
    return EXIT_OK


def cmd_learn(args: argparse.Namespace) -> int:
    from routermesh.labelled import LabelledError  # noqa: PLC0415
    from routermesh.local import LocalError  # noqa: PLC0415
    from routermesh.table_check import CheckError  # noqa: PLC0415
    from routermesh_bench.learn import LearnError, LearnOptions, learn_curve  # noqa: PLC0415
    from routermesh_bench.plots import learn_plots  # noqa: PLC0415
    from routermesh_bench.records import dumps  # noqa: PLC0415

    missing = [
        p
        for p in [*args.filename, args.eval, *([args.stream] if args.stream else [])]
        if not Path(p).exists()
    ]
    if missing:
        sys.stderr.write(f"bench learn: no such file or folder: {', '.join(missing)}\n")
        return EXIT_USAGE
    try:
        run = learn_curve(
            LearnOptions(
                files=[Path(f) for f in args.filename],
                eval=Path(args.eval),
                stream=Path(args.stream) if args.stream else None,
                namespace=args.namespace,
                mesh=args.mesh,
                batch=args.batch,
                seed=args.seed,
                models_dir=Path(args.models_dir),
                offline=args.offline,
                report_out_of_scope=args.report_out_of_scope,
                error_rate=args.error_rate,
                source=args.source,
            )
        )
    except (OSError, LearnError, LabelledError, CheckError, LocalError) as error:
        sys.stderr.write(f"bench learn: {error}\n")
        return EXIT_INVALID
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = run.model_dump(mode="json")
    (out / "learn.json").write_text(dumps(result))
    learn_plots(result, out)
    sys.stdout.write(
        f"{run.mesh}: {run.stream_rows} requests streamed, {run.eval_rows} measured "
        f"(routed accuracy / in-scope coverage / out-of-scope / multi-step escalated)\n"
    )
    for step in run.steps:
        f = step.figures
        figures = " / ".join(
            "-" if v is None else f"{v:.1f}"
            for v in (
                f.routed_accuracy,
                f.coverage,
                f.out_of_scope_escalated,
                f.multi_step_escalated,
            )
        )
        sys.stdout.write(
            f"  after {step.streamed:5d} requests, {step.reported:4d} reported: {figures} %\n"
        )
    if run.error_rate:
        sys.stdout.write(f"  {run.wrong} reports named a wrong route (--error-rate)\n")
    sys.stdout.write(f"-> {out / 'learn.json'}\n")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from routermesh_bench.report import write_report  # noqa: PLC0415

    try:
        path = write_report(Path(args.results), Path(args.output))
    except (OSError, ValueError, KeyError) as error:
        sys.stderr.write(f"bench report: {error}\n")
        return EXIT_INVALID
    sys.stdout.write(f"wrote {path}\n")
    return EXIT_OK


def cmd_mcp_servers(args: argparse.Namespace) -> int:
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh_bench.mcp_servers import ServersError, serve  # noqa: PLC0415

    if not Path(args.servers).is_file():
        sys.stderr.write(f"bench mcp-servers: no such file: {args.servers}\n")
        return EXIT_USAGE
    configure_logging(args.log_level)
    try:
        serve(Path(args.servers), host=args.host, port=args.port, in_table_only=args.in_table)
    except ServersError as error:
        sys.stderr.write(f"bench mcp-servers: {error}\n")
        return EXIT_INVALID
    return EXIT_OK


def cmd_mcp_latency(args: argparse.Namespace) -> int:
    from routermesh_bench.mcp_latency import run  # noqa: PLC0415

    return run(args)


def cmd_mcp_table(args: argparse.Namespace) -> int:
    from routermesh_bench.mcp_servers import ServersError  # noqa: PLC0415
    from routermesh_bench.mcp_table import McpTableError, McpTableOptions, write  # noqa: PLC0415

    for name in ("servers", "train", "reference"):
        value = getattr(args, name)
        if value and not Path(value).is_file():
            sys.stderr.write(f"bench mcp-table: --{name}: no such file: {value}\n")
            return EXIT_USAGE
    if args.examples < 0:
        sys.stderr.write("bench mcp-table: --examples must not be negative\n")
        return EXIT_USAGE
    options = McpTableOptions(
        servers=Path(args.servers),
        train=Path(args.train) if args.train else None,
        examples=args.examples,
        port=args.port,
        host=args.host,
        descriptions=args.descriptions,
        reference=Path(args.reference) if args.reference else None,
        seed=args.seed,
        ping_seconds=args.ping_seconds,
        max_tools=args.max_tools,
    )
    try:
        manifest = write(options, Path(args.out), ["router-mesh", *sys.argv[1:]])
    except (OSError, ValueError, McpTableError, ServersError) as error:
        sys.stderr.write(f"bench mcp-table: {error}\n")
        return EXIT_INVALID
    routes = manifest["spec"]["routes"]
    sys.stdout.write(
        f"{len(routes)} MCP routes, {sum(len(r.get('examples', ())) for r in routes)} examples, "
        f"descriptions {'on' if args.descriptions else 'off'} -> {args.out}\n"
    )
    return EXIT_OK


def _mcp_args(servers: argparse.ArgumentParser, table: argparse.ArgumentParser) -> None:
    for p in (servers, table):
        p.add_argument(
            "--servers",
            default="bench/data/tools/servers.json",
            help="the tool servers (default: %(default)s)",
        )
        p.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
        p.add_argument(
            "--port", type=int, default=9300, help="the servers' port (default: %(default)s)"
        )
    servers.add_argument(
        "--in-table",
        action="store_true",
        help="serve only the servers the table routes to (in_table); default: all",
    )
    servers.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    table.add_argument("--train", help='labelled JSONL ("text", "route") the examples come from')
    table.add_argument(
        "--examples",
        type=int,
        default=0,
        metavar="K",
        help="examples per route drawn (seeded) from --train (default: 0, tools only)",
    )
    table.add_argument(
        "--descriptions",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="give the routes the reference table's descriptions (default: no)",
    )
    table.add_argument(
        "--reference",
        default="bench/data/tools/routetable.yaml",
        help="the table whose route names, labels and descriptions to take (default: %(default)s)",
    )
    table.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    table.add_argument(
        "--ping-seconds", type=int, default=30, help="mcp.pingSeconds (default: %(default)s)"
    )
    table.add_argument(
        "--max-tools",
        type=int,
        help="mcp.maxTools (default: the product's, 128)",
    )
    table.add_argument("--out", required=True, help="the RouteTable YAML to write")


def _stack_processes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, MAX_ORCHESTRATOR_WORKERS + 1),
        metavar="N",
        help="orchestrator processes sharing the port (router-mesh local --workers; default: 1)",
    )
    p.add_argument(
        "--redis-url",
        help="the decision cache in this Redis, shared by the workers (default: in-process)",
    )


def _common(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="LAYER",
        help="run the cascade without this layer (l0, l1, l2; repeatable)",
    )
    p.add_argument(
        "--port", type=int, default=port, help="orchestrator port (default: %(default)s)"
    )
    p.add_argument("--models-dir", default=".cache/models", help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _quality_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", help='labelled JSONL ("text", "route") the table is built from')
    p.add_argument(
        "--routetable", help="route over this RouteTable YAML instead (a hand-written table)"
    )
    p.add_argument(
        "--eval",
        required=True,
        help='labelled JSONL to route ("text", "route"; optional "kind": in_scope, '
        'out_of_scope, multi_step, and "routes" for multi-step rows)',
    )
    p.add_argument(
        "--few-shot",
        type=int,
        metavar="K",
        help="few-shot protocol: the table gets K examples per route drawn (seeded) from "
        "--train and nothing else (no examplesFrom)",
    )
    p.add_argument("--descriptions", help="JSON object: route -> description (few-shot tables)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="LAYER.FIELD=VALUE",
        help="a RouterMesh layer field for the bench mesh, e.g. l1.timeoutMs=5000 or "
        "l0.threshold=0.5 (repeatable)",
    )
    p.add_argument(
        "--absent",
        type=int,
        default=0,
        metavar="N",
        help="leave N routes (seeded) out of the table: their eval rows are out of scope",
    )
    p.add_argument(
        "--multi",
        type=int,
        default=0,
        metavar="N",
        help="add N synthetic multi-step rows (two in-scope eval rows of different routes "
        "joined by 'and', 'then', ...)",
    )
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--limit", type=int, help="route a seeded random sample of this many rows")
    p.add_argument(
        "--examples-per-route",
        type=int,
        default=5,
        help="inline examples per route in the RouteTable (default: %(default)s)",
    )
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight (default: 1)")
    p.add_argument("--thresholds", help="a calibration.json whose thresholds the mesh takes")
    p.add_argument("--records", help="reuse this records.jsonl instead of running the router")
    p.add_argument(
        "--head",
        type=int,
        metavar="EPOCHS",
        help="train L0's routing head on the train set (this many epochs; reused when already "
        "trained) before routing, and route with it",
    )
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="COMMAND",
        help="a command started beside the router and stopped with it, e.g. the MCP servers "
        "the routes point at (router-mesh local --also; repeatable). Routes that discover "
        "their tools over MCP must have tools in use before the run starts",
    )
    p.add_argument(
        "--tools-timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="how long to wait, once ready, for every MCP route's tools (default: 180)",
    )
    p.add_argument(
        "--no-all-layers",
        action="store_true",
        help="ask later layers only for what earlier ones leave (as in production; faster, "
        "but their metrics and calibration cover only those rows)",
    )
    _common(p, 18080)


def _adapt_args(adapt: argparse.ArgumentParser) -> None:
    adapt.add_argument("--records", required=True, help="records.jsonl of a quality run")
    adapt.add_argument("--out", required=True, help="results folder (adapt-*.json)")
    adapt.add_argument("--layer", default="l0", help="default: %(default)s")
    adapt.add_argument("--start", type=float, default=0.95, help="default: %(default)s")
    adapt.add_argument("--target", type=float, default=0.97, help="default: %(default)s")
    adapt.add_argument("--min-samples", type=int, default=50, help="default: %(default)s")
    adapt.add_argument("--max-step", type=float, default=0.05, help="default: %(default)s")
    adapt.add_argument("--floor", type=float, default=0.5, help="default: %(default)s")
    adapt.add_argument("--ceiling", type=float, default=0.99, help="default: %(default)s")
    adapt.add_argument(
        "--share", type=float, default=0.25, help="requests that get feedback (%(default)s)"
    )
    adapt.add_argument(
        "--batch", type=int, default=200, help="requests per learning interval (%(default)s)"
    )
    adapt.add_argument("--seed", type=int, default=0, help="default: %(default)s")


def _prior_args(prior: argparse.ArgumentParser) -> None:
    prior.add_argument(
        "--train", action="append", required=True, help="labelled train JSONL (repeatable)"
    )
    prior.add_argument(
        "--descriptions",
        action="append",
        default=[],
        help="route descriptions JSON, one per --train in the same order",
    )
    prior.add_argument(
        "--encoder",
        default=".cache/models/packaged/all-MiniLM-L6-v2-int8",
        help="L0 encoder folder (default: %(default)s)",
    )
    prior.add_argument("--tables", type=int, default=10, help="tables per file (default: 10)")
    prior.add_argument("--k", type=int, default=10, help="neighbours that vote (default: 10)")
    prior.add_argument("--seed", type=int, default=100, help="default: %(default)s")
    prior.add_argument("--out", default="bench/results/prior", help="default: %(default)s")


def _add_learn_command(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    learn = bench_sub.add_parser(
        "learn",
        help="replay the feedback loop in-process: escalated requests reported back with "
        "their route, L0's figures measured after each refresh",
    )
    learn.set_defaults(func=cmd_learn)
    learn.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="YAML file or folder with the RouterMesh and its RouteTables (repeatable)",
    )
    learn.add_argument(
        "--eval", required=True, help='labelled JSONL measured after each batch (with "kind")'
    )
    learn.add_argument(
        "--stream",
        help="labelled JSONL routed as traffic, in its order (default: a seeded half of "
        "--eval, shuffled, the other half measured)",
    )
    learn.add_argument("-n", "--namespace", default="default", help="default: %(default)s")
    learn.add_argument("--mesh", help="the RouterMesh to use when the files hold several")
    learn.add_argument(
        "--report-out-of-scope",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="report escalated out-of-scope requests with the escalation route, as an "
        "agent reports what the reasoning endpoint handled itself (default: on; "
        "--no-report-out-of-scope reports the in-scope ones alone)",
    )
    learn.add_argument(
        "--from",
        dest="source",
        choices=["endpoint", "tool-calls"],
        default="endpoint",
        help="who reports: the reasoning endpoint, on every escalated request (default), or "
        "an agent's tool calls through /mcp with api.learnFromToolCalls: an in-scope request "
        "escalated without a plan whose route was among the three offered",
    )
    learn.add_argument(
        "--batch", type=int, default=20, help="requests between refreshes (default: 20)"
    )
    learn.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="share of the reports the reasoning endpoint gets wrong, spread evenly: the best "
        "other route L0 ranked for an in-scope request, L0's best server for an out-of-scope "
        "one (default: 0)",
    )
    learn.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    learn.add_argument("--models-dir", default=".cache/models", help="default: %(default)s")
    learn.add_argument(
        "--offline", action="store_true", help="use the packaged encoder without trying its source"
    )
    learn.add_argument("--out", default="bench/results/learn", help="default: %(default)s")


def _add_mcp_commands(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The MCP benchmarks: tool servers, tables over them, the router's added latency."""
    mcp_servers = bench_sub.add_parser(
        "mcp-servers",
        help="serve the tool-routing benchmark's servers as real MCP servers (one process, "
        "each at /<name>/mcp)",
    )
    mcp_table = bench_sub.add_parser(
        "mcp-table",
        help="write a RouteTable over those MCP servers with K examples per route "
        "(descriptions off by default)",
    )
    _mcp_args(mcp_servers, mcp_table)
    mcp_servers.set_defaults(func=cmd_mcp_servers)
    mcp_table.set_defaults(func=cmd_mcp_table)

    latency = bench_sub.add_parser(
        "mcp-latency",
        help="what the router adds to MCP traffic: tools/call direct vs through /mcp and "
        "/v1/dispatch/mcp, tools/list direct vs pre-selected (a running router and server)",
    )
    latency.add_argument("--router", required=True, help="the router's URL (http://host:port)")
    latency.add_argument("--server", required=True, help="one MCP server's URL (.../mcp)")
    latency.add_argument("--route", required=True, help="the route whose target --server is")
    latency.add_argument("--tool", required=True, help="a tool of that server to call")
    latency.add_argument("--arguments", default="{}", help="the call's arguments (JSON)")
    latency.add_argument("--message", required=True, help="a request that routes to --route")
    latency.add_argument("--calls", type=int, default=300, help="rounds (default: %(default)s)")
    latency.add_argument("--token-file", help="the router's API token, if it has one")
    latency.add_argument("--out", required=True, help="results folder")
    latency.set_defaults(func=cmd_mcp_latency)


def add_bench_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks of the real stack (results to files)")
    bench_sub = bench.add_subparsers(dest="action", required=True, metavar="ACTION")

    quality = bench_sub.add_parser(
        "quality", help="routing quality of the real cascade on a labelled eval JSONL"
    )
    _quality_args(quality)
    quality.set_defaults(func=cmd_quality)

    fit = bench_sub.add_parser(
        "calibrate",
        help="fit per-layer thresholds for target accuracies on a labelled validation JSONL",
    )
    _quality_args(fit)
    fit.add_argument(
        "--target",
        type=lambda v: _targets([v]),
        action="append",
        default=[],
        metavar="LAYER=ACC",
        help="target accuracy of a layer (default: l0=0.98, l1=0.95, l2=0.92; repeatable)",
    )
    fit.add_argument("--min-samples", type=int, default=20, help="default: %(default)s")
    fit.add_argument(
        "--per-route",
        action="store_true",
        help="also raise the threshold of each route whose own decisions miss the target "
        "(on CLINC150 val this cost 5 points of coverage for 0.6 of accuracy)",
    )
    fit.add_argument(
        "--no-confidence-calibration",
        action="store_true",
        help="fit thresholds on the confidences as reported (default: fit Platt scaling per "
        "layer first, adopted where it lowers the error on a held-out half)",
    )
    fit.add_argument(
        "--max-step",
        type=float,
        help="move each threshold at most this far from the one the run used (a guarded "
        "update; default: unbounded)",
    )
    fit.add_argument(
        "--oos-target",
        type=float,
        metavar="SHARE",
        help="also raise the first layer's threshold until this share of out-of-scope rows "
        "is escalated (e.g. 0.85; accuracy targets alone say nothing about them)",
    )
    fit.add_argument(
        "--oos-share",
        type=_share,
        metavar="SHARE",
        help="out-of-scope requests are this share of real traffic (e.g. 0.18): also raise "
        "the first layer's threshold until its accuracy target holds with them weighted so "
        "(an eval file with few of them, like CLINC150 val's 3 %%, promises too much)",
    )
    fit.set_defaults(func=cmd_calibrate)

    perf = bench_sub.add_parser(
        "perf", help="latency, throughput, memory and start time of the real local stack"
    )
    perf.add_argument(
        "-f",
        "--filename",
        action="append",
        default=None,
        help="RouterMesh/RouteTable YAML (default: samples/homelab)",
    )
    perf.add_argument(
        "--messages",
        default="bench/data/homelab-messages.jsonl",
        help="held-out labelled messages (default: %(default)s)",
    )
    perf.add_argument("--out", default="bench/results/perf", help="default: %(default)s")
    perf.add_argument(
        "--requests", type=int, default=64, help="uncached decisions per measurement (default: 64)"
    )
    perf.add_argument(
        "--cached-requests", type=int, default=400, help="cache hits per measurement (default: 400)"
    )
    _common(perf, 18090)
    _stack_processes(perf)
    perf.set_defaults(func=cmd_perf)

    load = bench_sub.add_parser(
        "load", help="bounded load, soak (RSS) and label injection on the real local stack"
    )
    load.add_argument(
        "-f",
        "--filename",
        action="append",
        default=None,
        help="RouterMesh/RouteTable YAML (default: samples/homelab)",
    )
    load.add_argument(
        "--messages",
        default="bench/data/homelab-messages.jsonl",
        help="messages the workload repeats and varies (default: %(default)s)",
    )
    load.add_argument(
        "--injection",
        default="bench/data/label-injection.jsonl",
        help="label-injection set (default: %(default)s)",
    )
    load.add_argument("--out", default="bench/results/load", help="default: %(default)s")
    load.add_argument("--requests", type=int, default=5000, help="default: %(default)s")
    load.add_argument("--concurrency", type=int, default=64, help="default: %(default)s")
    load.add_argument(
        "--unique-share",
        type=float,
        default=0.1,
        help="share of fresh messages (through the layers); the rest repeat (default: 0.1)",
    )
    load.add_argument("--soak-rounds", type=int, default=5, help="default: %(default)s")
    load.add_argument("--soak-requests", type=int, default=2000, help="default: %(default)s")
    load.add_argument(
        "--deadline", type=float, default=900.0, help="seconds a round may take (default: 900)"
    )
    _common(load, 18100)
    _stack_processes(load)
    load.set_defaults(func=cmd_load)

    adapt = bench_sub.add_parser(
        "adapt",
        help="replay adaptive thresholds on a quality run's records: fed one half as "
        "feedback, measured on the other",
    )
    _adapt_args(adapt)
    adapt.set_defaults(func=cmd_adapt)

    prior = bench_sub.add_parser(
        "prior",
        help="fit L0's calibration prior on few-shot tables drawn from labelled train files",
    )
    _prior_args(prior)
    prior.set_defaults(func=cmd_prior)

    _add_learn_command(bench_sub)

    _add_mcp_commands(bench_sub)

    report = bench_sub.add_parser("report", help="write docs/benchmarks.md from the results")
    report.add_argument("--results", default="bench/results", help="default: %(default)s")
    report.add_argument("--output", default="docs/benchmarks.md", help="default: %(default)s")
    report.set_defaults(func=cmd_report)
