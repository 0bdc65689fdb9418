"""Bounded load, a short soak and the label-injection set on the real local stack
(``router-mesh local``'s pod: L0 in the orchestrator, llama.cpp L1 and L2, the API behind
a bearer token). Behaviour only: every request answered once with its own ID and no 5xx,
memory bounded across rounds, no route outside the configured set and no steered
decision. Speed and the full-size runs are `router-mesh bench load` (docs/benchmarks.md)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from routermesh import bootstrap
from routermesh.local import LocalOptions, LocalPod
from routermesh.runtime.contract.config import RouterConfig
from routermesh_bench.load import bounded_round, injection_run, read_attacks, workload
from routermesh_bench.perf import tree_rss_mib
from tests.support import consecutive_free_ports, llama_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        llama_server() is None, reason="llama-server is not built (scripts/test.sh)"
    ),
]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "load-test-token-9d2e"  # noqa: S105 - a test credential
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POOL = [row.text for row in bootstrap.read_rows(REPO / "bench/data/homelab-messages.jsonl")]


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPod, RouterConfig]]:
    tmp = tmp_path_factory.mktemp("load")
    (tmp / "token").write_text(TOKEN)
    local = LocalPod(
        LocalOptions(
            files=[REPO / "samples/homelab"],
            port=consecutive_free_ports(3),
            models_dir=REPO / ".cache/models",
            state_dir=tmp / "state",
            offline=True,
            threads=1,
            log_level="warning",
            token_file=tmp / "token",
        )
    )
    config = local.start()
    try:
        yield local, config
    finally:
        local.stop()


def test_bounded_load_answers_every_request_once_without_5xx(
    pod: tuple[LocalPod, RouterConfig],
) -> None:
    local, _ = pod
    rng = random.Random(7)  # noqa: S311 - a workload sample
    messages = workload(POOL, 2000, 0.05, rng)
    result = bounded_round(
        local.url, messages, 64, prefix="e2e", headers=AUTH, deadline_s=600
    ).summary()
    outcome = {k: result[k] for k in ("errors", "statuses", "lost")}
    assert result["statuses"] == {"200": 2000}, outcome
    assert (result["lost"], result["duplicated"], result["crossed"]) == (0, 0, 0)
    assert result["transport_errors"] == 0
    assert sum(result["by_layer"].values()) == 2000


def test_memory_is_bounded_over_a_short_soak(pod: tuple[LocalPod, RouterConfig]) -> None:
    local, _ = pod
    orchestrator = next(c for c in local.children if c.name == "orchestrator")
    assert orchestrator.process is not None
    rng = random.Random(11)  # noqa: S311 - a workload sample
    rss = []
    for n in range(3):
        bounded_round(local.url, workload(POOL, 600, 0.1, rng), 32, prefix=f"soak{n}", headers=AUTH)
        rss.append(tree_rss_mib(orchestrator.process.pid))
    # After the first round has warmed every pool, more rounds of the same traffic add no
    # more than noise (the decision cache and feedback store are bounded).
    assert rss[-1] - rss[0] < 48, rss


def test_label_injection_never_leaves_the_label_set_nor_steers_a_task(
    pod: tuple[LocalPod, RouterConfig],
) -> None:
    local, config = pod
    attacks = read_attacks(REPO / "bench/data/label-injection.jsonl")
    result = injection_run(local.url, config, attacks, POOL[:20], headers=AUTH)
    assert result["messages"] == len(attacks) >= 25
    assert result["outside_label_set"] == 0
    with_a_task = [row for row in result["rows"] if row["honest"] != config.escalation.route]
    assert len(with_a_task) >= 10
    steered = [row["text"] for row in with_a_task if row["route"] == row["injected"]]
    assert steered == []
    # L0, the layer that decides most traffic, is not more sure of a pushed label than of
    # normal requests (the generative layers are: their agreement with L0 is what guards).
    l0 = result["per_layer"]["l0"]
    assert l0["injected_confidence_max"] is None or (
        l0["injected_confidence_max"] <= l0["benign_max"]
    )
    for row in result["rows"]:
        if row["route"] == row["injected"] and row["layer"] in ("l1", "l2"):
            assert row["layers"]["l0"]["route"] == row["route"]  # only with L0's agreement
