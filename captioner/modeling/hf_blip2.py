"""A tiny, randomly initialised Hugging Face BLIP-2 (ViT -> Q-Former -> LLaMA) model directory: the HF path's
stand-in for tests and benchmarks (`mmfeat make-captioner`). A real BLIP-2 checkpoint serves through the
same engine (captioner/runtime.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from captioner.configuration import IMAGE_TOKEN, MANIFEST, Manifest

NUM_QUERY_TOKENS = 8


def word_tokenizer(vocab: dict[str, int]) -> Any:
    """A word-level HF tokenizer over ``vocab`` (padding on the left, for decoder-only generation)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = HFTokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="left"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer


def tiny_config(vocab: dict[str, int], hidden: int, image_size: int) -> Any:
    """BLIP-2 with a ViT, a Q-Former and a LLaMA decoder, each two layers of ``hidden`` units."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, LlamaConfig

    layers: dict[str, Any] = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": hidden, "intermediate_size": hidden * 2}
    return Blip2Config(
        vision_config=Blip2VisionConfig(**layers, image_size=image_size, patch_size=16).to_dict(),
        qformer_config=Blip2QFormerConfig(
            **layers, encoder_hidden_size=hidden, cross_attention_frequency=1, vocab_size=len(vocab)
        ).to_dict(),
        text_config=LlamaConfig(
            **layers, vocab_size=len(vocab), num_key_value_heads=4, max_position_embeddings=128,
            bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"],
        ).to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS,
        image_token_index=vocab[IMAGE_TOKEN],
    )  # fmt: skip


def make_untrained_captioner(out_dir: Path, *, seed: int = 0, hidden: int = 64, image_size: int = 64) -> Manifest:
    """Write a tiny, randomly initialised BLIP-2 (ViT -> Q-Former -> LLaMA) with a word-level tokenizer.

    Its captions are random words from the caption vocabulary: correct in shape, not in content.
    """
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    from captioner.world.clipart import caption_corpus
    from mmfeat.normalize import normalize_caption

    specials = ["<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN]
    words = sorted({w for c in caption_corpus(5000, seed=seed) for w in normalize_caption(c).split()})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(tiny_config(vocab, hidden, image_size)).eval()
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=word_tokenizer(vocab), num_query_tokens=NUM_QUERY_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    weights = b"".join(p.read_bytes() for p in sorted(out_dir.glob("*.safetensors")))
    manifest = Manifest(
        name="untrained-tiny", version=f"untrained-tiny@{hashlib.sha256(weights).hexdigest()[:8]}", trained=False,
        max_new_tokens=12, image_size=image_size,
    )  # fmt: skip
    (out_dir / MANIFEST).write_text(json.dumps(manifest.__dict__, indent=2))
    return manifest
