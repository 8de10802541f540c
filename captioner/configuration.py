"""Captioner configuration: the manifest of a model directory (what the Triton ``captioner`` model loads) and
the default architecture's hyper-parameters.

A model directory is either a Hugging Face ``Blip2ForConditionalGeneration`` checkpoint (image encoder ->
Q-Former -> LLaMA-style decoder) with its processor files, or the project's own ``lite0-qformer-llama``
(captioner/modeling/lite.py); ``mmfeat.json`` names its kind, version and whether it was trained. The
kind picks the engine that serves it (captioner/runtime.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "mmfeat.json"
IMAGE_TOKEN = "<image>"
HF_BLIP2 = "hf-blip2"
LITE = "lite0-qformer-llama"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    trained: bool
    max_new_tokens: int = 16
    image_size: int = 224
    kind: str = HF_BLIP2  # or LITE; a key of captioner.runtime.ENGINES


def read_manifest(model_dir: Path) -> Manifest:
    """The model directory's manifest; for a plain HF checkpoint, one derived from its config."""
    path = model_dir / MANIFEST
    if path.exists():
        data = json.loads(path.read_text())
        known = Manifest.__dataclass_fields__
        return Manifest(**{k: v for k, v in data.items() if k in known})
    config = (model_dir / "config.json").read_bytes()
    return Manifest(name=model_dir.name, version=f"hf-{model_dir.name}@{hashlib.sha256(config).hexdigest()[:8]}", trained=True)


@dataclass(frozen=True)
class LiteConfig:
    """Hyper-parameters of the default captioner (captioner/modeling/lite.py)."""

    hidden: int = 256
    qformer_layers: int = 2
    llm_layers: int = 3
    heads: int = 4
    queries: int = 16
    max_new_tokens: int = 16
    finetune_tail: int = 1  # encoder blocks (plus head) trained; 0 keeps the encoder wholly frozen
    llm_hidden: int = 0  # 0: the same as ``hidden``
    llm_intermediate: int = 0  # 0: twice the decoder's hidden size
    min_new_tokens: int = 0  # > 0 fixes the caption length (throughput benchmarks)

    @property
    def decoder_hidden(self) -> int:
        return self.llm_hidden or self.hidden
