"""Convert a GGUF model to a Hugging Face folder for vLLM's CPU build (it cannot serve GGUF).

Run with the vLLM venv's Python (transformers and gguf installed there):
    .cache/vllm-venv/bin/python bench/convert_gguf.py MODEL.gguf OUT_DIR

transformers dequantizes the GGUF weights on load; the quantization config it attaches
is cleared so the folder is a plain bf16 checkpoint (vLLM's CPU build cannot serve GGUF).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> int:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    if (out / "config.json").is_file():
        print(f"already converted: {out}")  # noqa: T201
        return 0
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.bfloat16
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(out)
    print(f"converted {source} -> {out} in {time.monotonic() - started:.0f} s")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
