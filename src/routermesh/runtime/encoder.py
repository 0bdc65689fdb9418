"""L0's sentence encoder: an ONNX sentence-transformers model run by onnxruntime.

The orchestrator runs it in-process (no model server, no PyTorch): mean pooling over
the token states, unit length. :class:`EncoderStore` keeps the encoder and the
vectors of texts it already embedded across config reloads, so a reload that changes
one example does not re-embed thousands.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from routermesh.runtime.cpus import available_cpus

FloatArray = npt.NDArray[np.float32]

MAX_TOKENS = 128
BATCH = 64
MODEL_FILES = ("model.onnx", "onnx/model.onnx", "onnx/model_quantized.onnx")
TOKENIZER_FILE = "tokenizer.json"


class EncoderError(Exception):
    pass


def encoder_threads(cpus: int | None = None) -> int:
    """onnxruntime's threads for L0: ``ROUTER_MESH_L0_THREADS``, else the CPUs the process
    may use (its container's limit, at most 4). Every CPU on a lone request: on 2 CPUs one
    thread made a tool-table decision 1.5x slower (p50 18.4 against 12.2 ms), while under
    saturating load it gave 20-35 % more decisions/s; the small tables people write come
    first, and the batcher already shares the encoder under load."""
    configured = os.environ.get("ROUTER_MESH_L0_THREADS")
    if configured and configured.isdigit():
        return max(1, int(configured))
    cpus = available_cpus() if cpus is None else cpus
    return max(1, min(4, cpus))


class Encoder:
    """A sentence-transformers model exported to ONNX: mean pooling, unit length."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - heavy, only where L0 runs
        from tokenizers import Tokenizer  # noqa: PLC0415

        model = next((folder / name for name in MODEL_FILES if (folder / name).is_file()), None)
        tokenizer = folder / TOKENIZER_FILE
        if model is None or not tokenizer.is_file():
            raise EncoderError(
                f"{folder} needs {TOKENIZER_FILE} and one of {', '.join(MODEL_FILES)}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or encoder_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: the orchestrator shares its cores with the event
        # loop (and, in a pod, the model servers); spinning threads slowed the numpy step
        # after each encode by milliseconds.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding()

    def encode(self, texts: Sequence[str], batch: int = BATCH) -> FloatArray:
        # Batches of similar lengths pad little; the result keeps the input order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for start in range(0, len(order), batch):
            chunk = [texts[i] for i in order[start : start + batch]]
            encodings = self.tokenizer.encode_batch(chunk)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out.append(pooled.astype(np.float32))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(out)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: FloatArray = vectors / np.maximum(norms, 1e-12)
        return normalized


class EncoderStore:
    """Encoders and example vectors kept across config reloads in this process.

    A reload that changes a threshold or one example must not re-embed thousands of
    examples: vectors are looked up by text for the same encoder file, and only new
    texts are encoded. Only the latest set per encoder is kept (bounded memory).
    """

    def __init__(self) -> None:
        self._encoders: dict[str, Encoder] = {}
        self._vectors: dict[str, dict[str, FloatArray]] = {}

    @staticmethod
    def _key(folder: Path) -> str:
        files = [folder / n for n in (*MODEL_FILES, TOKENIZER_FILE) if (folder / n).is_file()]
        return "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)

    def encoder(self, folder: Path) -> tuple[str, Encoder]:
        key = self._key(folder)
        if key not in self._encoders:
            self._encoders = {key: Encoder(folder)}  # one encoder file at a time
            # ... and its vectors only: a head replacing the base encoder frees the base's.
            self._vectors = {k: v for k, v in self._vectors.items() if k == key}
        return key, self._encoders[key]

    def vectors(self, key: str, encoder: Encoder, texts: Sequence[str]) -> tuple[FloatArray, int]:
        """Vectors of ``texts`` (known ones reused) and how many were encoded now."""
        known = self._vectors.get(key, {})
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        fresh = encoder.encode(missing) if missing else None
        table = {t: known[t] for t in texts if t in known}
        if fresh is not None:
            table.update(zip(missing, fresh, strict=True))
        self._vectors[key] = table
        return np.stack([table[t] for t in texts]).astype(np.float32), len(missing)


STORE = EncoderStore()
