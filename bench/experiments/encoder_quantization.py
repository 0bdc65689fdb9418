"""How fast, and how faithful, is L0's encoder in each ONNX form on this machine?

The shipped L0 serves the packaged int8 all-MiniLM-L6-v2. This exports the packaged fp32
weights with the project's own BERT (``runtime/minilm.py``, as a trained head's artifact
is exported), quantizes that graph with onnxruntime's dynamic quantization in several
ways, and times one message per call (the serving path's shape: ``Encoder.encode`` of a
single request, one intra-op thread unless ``--threads``), interleaving the forms so
drift hits all alike. Reports p50 / p95 milliseconds and each form's cosine to the fp32
vectors (1 is the same embedding). Routing figures are not measured here: a new form
changes every similarity the calibration was fitted on.

    .venv/bin/python bench/experiments/encoder_quantization.py \\
        --out bench/results/experiments/encoder-quantization.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from routermesh.runtime.encoder import TOKENIZER_FILE, Encoder
from routermesh.runtime.encoder_training import export_encoder
from routermesh.runtime.minilm import load_encoder

SHIPPED = "packaged/all-MiniLM-L6-v2-int8"
BASE = "packaged/all-MiniLM-L6-v2"


def _forms(base: Path, out: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from tokenizers import Tokenizer  # noqa: PLC0415

    settings: dict[str, dict[str, Any]] = {
        "int8, per tensor (QInt8)": {"weight_type": QuantType.QInt8},
        "int8, per channel (QInt8)": {"weight_type": QuantType.QInt8, "per_channel": True},
        "uint8, per tensor (QUInt8)": {"weight_type": QuantType.QUInt8},
        "uint8, per channel (QUInt8)": {"weight_type": QuantType.QUInt8, "per_channel": True},
    }
    folders = {"fp32 (own export)": out / "fp32"}
    folders |= {name: out / f"q{i}" for i, name in enumerate(settings)}
    for folder in folders.values():
        folder.mkdir()
        shutil.copyfile(base / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    tokenizer = Tokenizer.from_file(str(base / TOKENIZER_FILE))
    tokenizer.enable_padding()
    export_encoder(load_encoder(base).eval(), tokenizer, folders["fp32 (own export)"])
    for name, kwargs in settings.items():
        quantize_dynamic(
            str(folders["fp32 (own export)"] / "model.onnx"),
            str(folders[name] / "model.onnx"),
            **kwargs,
        )
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=Path, default=Path("bench/data/tools/dev.jsonl"))
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/models"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.messages.open()][: args.count]
    scratch = Path(tempfile.mkdtemp(prefix="encoder-quantization-"))
    folders = {"shipped int8 (packaged)": args.models_dir / SHIPPED}
    folders |= _forms(args.models_dir / BASE, scratch)
    encoders = {name: Encoder(folder, threads=args.threads) for name, folder in folders.items()}
    for encoder in encoders.values():
        encoder.encode(texts[:20])  # warm
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for number, text in enumerate(texts, start=1):
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode([text])
            times[name].append((time.perf_counter() - started) * 1000)
        if number % 100 == 0:
            sys.stderr.write(f"{number}/{len(texts)} messages timed\n")
    reference = encoders["fp32 (own export)"].encode(texts)
    lines = [
        f"{len(texts)} messages of {args.messages}, one per call, {args.threads} thread(s); "
        "p50 / p95 ms; cosine to the fp32 vectors: mean / min"
    ]
    for name, encoder in encoders.items():
        cosine = np.sum(encoder.encode(texts) * reference, axis=1)
        p50, p95 = np.percentile(times[name], [50, 95])
        lines.append(
            f"{name:30s} {p50:6.2f} / {p95:6.2f} ms   {cosine.mean():.4f} / {cosine.min():.4f}"
        )
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
