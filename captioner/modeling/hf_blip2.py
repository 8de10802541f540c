"""A tiny, randomly initialised Hugging Face BLIP-2 (ViT -> Q-Former -> LLaMA) model directory: the HF path's
stand-in for tests and benchmarks (`mmfeat make-captioner`). A real BLIP-2 checkpoint serves through the
same engine (captioner/runtime.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from captioner.configuration import IMAGE_TOKEN, MANIFEST, Manifest


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

    from captioner.world.clipart import caption_corpus
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
