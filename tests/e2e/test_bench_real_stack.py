"""`router-mesh bench quality` and `bench perf` on the real local stack (llama-server with
the packaged models, the orchestrator, Redis when installed), on small inputs: the files
they promise are written with real measurements, and the recorded decisions are exactly
what the cascade's thresholds give for the recorded layer verdicts (so `all_layers`
changes nothing, and the calibration's offline replay of the cascade is the real one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from routermesh_bench.records import read_records
from tests.support import consecutive_free_ports, free_port, homelab_with_generative, llama_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        llama_server() is None, reason="llama-server is not built (scripts/test.sh)"
    ),
]

REPO = Path(__file__).resolve().parents[2]
MESSAGES = REPO / "bench/data/homelab-messages.jsonl"


def _run(args: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # unreachable: packaged models
    }
    return subprocess.run(
        [sys.executable, "-m", "routermesh.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_bench_quality_on_the_real_cascade(tmp_path: Path) -> None:
    out = tmp_path / "quality"
    done = _run(
        [
            "quality",
            "--train",
            str(MESSAGES),
            "--eval",
            str(MESSAGES),
            "--out",
            str(out),
            "--limit",
            "8",
            "--port",
            str(consecutive_free_ports(3)),
            "--models-dir",
            str(REPO / ".cache/models"),
            # The generative layers are off by default; this run asks every layer.
            "--set",
            "l1.enabled=true",
            "--set",
            "l2.enabled=true",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"event": "bench_progress"' in done.stderr
    quality = json.loads((out / "quality.json").read_text())
    assert quality["n"] == 8
    for key in ("routed_accuracy", "coverage", "oos_escalated", "ece", "per_layer"):
        assert key in quality
    names = [x["name"] for x in quality["run"]["layers"]]
    assert names == ["l0", "l1", "l2"]
    assert set(quality["ece"]) == set(names)
    assert sum(v["n"] for v in quality["per_layer"].values()) == 8
    assert (out / "quality.png").is_file() and (out / "stack/routetable.yaml").is_file()

    records = list(read_records(out / "records.jsonl"))
    layers = {x["name"]: x["threshold"] for x in quality["run"]["layers"]}
    for record in records:
        assert [v.layer for v in record.trace] == names  # all layers asked
        decider = next(
            (
                v
                for v in record.trace
                if v.route is not None
                and v.reason is None
                and (
                    (v.layer == "l0" and v.cause == "multi_step")  # L0's plan is decisive
                    or v.confidence >= layers[v.layer]
                    or (v.out_of_scope or 0.0) >= layers[v.layer]
                )
            ),
            None,
        )
        if decider is None:
            assert record.layer == "escalated"
        elif decider.route != "escalate" and decider.confidence >= layers[decider.layer]:
            assert (record.layer, record.route) == (decider.layer, decider.route)
        else:  # a layer that said the message escalates
            assert (record.layer, record.route) == (decider.layer, "escalate")


def test_bench_perf_writes_every_measure(tmp_path: Path) -> None:
    messages = tmp_path / "messages.jsonl"
    messages.write_text("".join(MESSAGES.read_text().splitlines(keepends=True)[::7]))
    out = tmp_path / "perf"
    done = _run(
        [
            "perf",
            "-f",
            str(homelab_with_generative(tmp_path / "yaml")),
            "--messages",
            str(messages),
            "--out",
            str(out),
            "--requests",
            "4",
            "--cached-requests",
            "12",
            "--port",
            str(consecutive_free_ports(3)),
            "--models-dir",
            str(REPO / ".cache/models"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    perf = json.loads((out / "perf.json").read_text())
    assert set(perf["start_seconds"]) == {"l1", "l2", "orchestrator", "pod_ready"}
    assert all(v > 0 for v in perf["start_seconds"].values())
    assert set(perf["rss_mib"]) == {"l1", "l2", "orchestrator"}
    assert all(v > 10 for v in perf["rss_mib"].values())
    assert perf["uncached"]["client_ms"]["n"] == 4
    assert [p["concurrency"] for p in perf["throughput"]["uncached"]] == [1, 8, 32]
    assert all(p["requests"] == 12 for p in perf["throughput"]["cached"])
    unique = perf["replay"]["unique"]
    assert perf["replay"]["messages"] == 2 * unique
    # A fresh cache: at most the repeats come from it (first occurrences are decided).
    repeats = perf["replay"]["messages"] - unique
    assert perf["replay"]["decided_by"].get("cache", 0) <= repeats
    assert perf["orchestrator_overhead_ms"]["n"] == 4
    assert (out / "perf.png").stat().st_size > 10_000
