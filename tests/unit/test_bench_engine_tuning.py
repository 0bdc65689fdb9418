"""The engine benchmark's tuning helpers (bench/routermesh_bench/engines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routermesh_bench.engines import file_messages, log_notes, timing_summary


def test_timing_summary_counts_evaluated_tokens_and_prefix_hits() -> None:
    timings = [
        {"cache_n": 60, "prompt_n": 40, "prompt_ms": 80.0, "predicted_ms": 0.0},
        {"cache_n": 70, "prompt_n": 30, "prompt_ms": 60.0, "predicted_ms": 1.0},
        {"cache_n": 10, "prompt_n": 90, "prompt_ms": 180.0, "predicted_ms": 0.0},
    ]
    summary = timing_summary(timings, prefix_tokens=60)
    assert summary["evaluated_tokens"] == {"p50": 40, "mean": 53.3, "min": 30, "max": 90}
    assert summary["prompt_tokens_mean"] == 100.0
    assert summary["ms_per_evaluated_token"] == 2.0
    assert summary["prefix_hit_share"] == 0.667
    assert summary["server_ms_p50"] == 80.0


def test_timing_summary_of_nothing_is_empty() -> None:
    assert timing_summary([], prefix_tokens=10) == {}


def test_file_messages_are_distinct_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    rows = [{"text": "a", "route": "x"}, {"text": "a", "route": "y"}, {"text": "b", "route": "z"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert file_messages(path, 2) == [("a", "x"), ("b", "z")]
    with pytest.raises(SystemExit):
        file_messages(path, 3)


def test_log_notes_keep_repack_and_flash_attention_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "load_tensors: CPU_REPACK model buffer size = 10 MiB\nnoise\nflash_attn = auto\n"
    )
    assert log_notes(log) == [
        "flash_attn = auto",
        "load_tensors: CPU_REPACK model buffer size = 10 MiB",
    ]
