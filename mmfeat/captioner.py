"""Captioner model directories: what the Triton ``captioner`` model loads.

A model directory is a Hugging Face ``Blip2ForConditionalGeneration`` checkpoint (image encoder ->
Q-Former -> LLaMA-style decoder) with its processor files, plus an optional ``mmfeat.json``
manifest naming its version and whether it was trained. A real BLIP-2 checkpoint serves through
the same code; :func:`make_untrained_captioner` writes a tiny one of the same architecture for
tests and benchmarks until the trained default exists, labelled ``trained: false``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "mmfeat.json"
IMAGE_TOKEN = "<image>"


HF_BLIP2 = "hf-blip2"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    trained: bool
    max_new_tokens: int = 16
    image_size: int = 224
    kind: str = HF_BLIP2  # or "lite0-qformer-llama" (mmfeat/lite_captioner.py)


def read_manifest(model_dir: Path) -> Manifest:
    """The model directory's manifest; for a plain HF checkpoint, one derived from its config."""
    path = model_dir / MANIFEST
    if path.exists():
        data = json.loads(path.read_text())
        known = Manifest.__dataclass_fields__
        return Manifest(**{k: v for k, v in data.items() if k in known})
    config = (model_dir / "config.json").read_bytes()
    return Manifest(name=model_dir.name, version=f"hf-{model_dir.name}@{hashlib.sha256(config).hexdigest()[:8]}", trained=True)


def make_untrained_captioner(out_dir: Path, *, seed: int = 0, hidden: int = 64, image_size: int = 64) -> Manifest:
    """Write a tiny, randomly initialised BLIP-2 (ViT -> Q-Former -> LLaMA) with a word-level tokenizer.

    Its captions are random words from the caption vocabulary: correct in shape, not in content.
    """
    import torch
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        BlipImageProcessor,
        LlamaConfig,
        PreTrainedTokenizerFast,
    )

    from mmfeat.clipart import caption_corpus
    from mmfeat.normalize import normalize_caption

    specials = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]
    words = sorted({w for c in caption_corpus(5000, seed=seed) for w in normalize_caption(c).split()})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    core = HFTokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    num_query_tokens = 8
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=16,
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            encoder_hidden_size=hidden,
            cross_attention_frequency=1,
            vocab_size=len(vocab),
        ).to_dict(),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=128,
            bos_token_id=vocab["<s>"],
            eos_token_id=vocab["</s>"],
            pad_token_id=vocab["<pad>"],
        ).to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=vocab[IMAGE_TOKEN],
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    weights = b"".join(p.read_bytes() for p in sorted(out_dir.glob("*.safetensors")))
    manifest = Manifest(
        name="untrained-tiny",
        version=f"untrained-tiny@{hashlib.sha256(weights).hexdigest()[:8]}",
        trained=False,
        max_new_tokens=12,
        image_size=image_size,
    )
    (out_dir / MANIFEST).write_text(json.dumps(manifest.__dict__, indent=2))
    return manifest


@dataclass(frozen=True)
class Caption:
    text: str
    token_ids: list[int]


class CaptionerRuntime:
    """A loaded model directory that captions a batch of images with ONE batched ``generate``."""

    def __init__(self, model_dir: Path, *, device: str = "cpu", num_threads: int | None = None) -> None:
        import torch
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        if num_threads:
            torch.set_num_threads(num_threads)
        self.manifest = read_manifest(model_dir)
        self.device = device
        self.lite: Any = None
        if self.manifest.kind != HF_BLIP2:
            from mmfeat.lite_captioner import KIND, LiteRuntime

            if self.manifest.kind != KIND:
                raise ValueError(f"{model_dir}: unknown captioner kind {self.manifest.kind!r}")
            self.lite = LiteRuntime(model_dir, device)
            return
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.processor.tokenizer.padding_side = "left"  # decoder-only generation pads on the left
        model = Blip2ForConditionalGeneration.from_pretrained(model_dir)
        self.model = model.to(device).eval()  # type: ignore[arg-type]  # transformers' stubs type .to() oddly

    @property
    def version(self) -> str:
        return self.manifest.version

    def decode(self, data: bytes, max_pixels: int) -> Any:
        """Encoded image bytes -> the RGB image this model captions (the one decoding path).

        Decoded no larger than twice the model's input: resizing a 1024-px image costs more than
        the tiny model's whole forward pass, and it cannot be batched.
        """
        from mmfeat.imaging import decode_rgb

        return decode_rgb(data, max_pixels, max_side=max(2 * self.manifest.image_size, 128))

    def caption(self, images: Sequence[Any], prompts: list[str]) -> list[Caption]:
        """Greedy-decode one caption per image; deterministic for a given model and input."""
        import torch

        if self.lite is not None:  # this architecture takes no prompt
            return list(self.lite.caption(images, self.manifest.max_new_tokens))
        inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=self.manifest.max_new_tokens)
        new_tokens = out[:, inputs["input_ids"].shape[1] :] if out.shape[1] > inputs["input_ids"].shape[1] else out
        tok = self.processor.tokenizer
        special = set(tok.all_special_ids)
        captions = []
        for row in new_tokens.tolist():
            ids = [i for i in row if i not in special]
            captions.append(Caption(text=tok.decode(ids, skip_special_tokens=True).strip(), token_ids=ids))
        return captions
