"""The default captioner: frozen pretrained EfficientNet-Lite0 -> Q-Former -> small LLaMA decoder.

The paper's architecture (BLIP-2 with a LLaMA decoder) at a size that trains on 2 CPU cores:
the image encoder is the ImageNet-pretrained Lite0 (only its last block and head may be
fine-tuned), the Q-Former is transformers' ``Blip2QFormerModel`` and the decoder is
``LlamaForCausalLM``. A model directory holds ``mmfeat.json`` (kind ``lite0-qformer-llama``),
``weights.safetensors`` (everything but the frozen encoder, which loads from its package) and
``vocab.json``; captioner/runtime.py serves it in Triton next to plain HF BLIP-2 checkpoints.

Shapes: images (B, 3, 224, 224) -> trunk (B, 192, 7, 7) -> visual tokens (B, 49, 1280 + 64 position)
-> Q-Former queries (B, Q, H) -> decoder prefix (B, Q, H_llm) + caption tokens (B, T).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captioner.configuration import LITE, MANIFEST, LiteConfig, Manifest
from captioner.modeling.encoder import EfficientNetLite0, load_pretrained
from captioner.processing import BOS, EOS, IMAGE_SIZE, PAD, WordVocab

POSITION_DIM = 64


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """(side*side, dim): the first half of each row encodes the column, the second half the row."""
    quarter = dim // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter) / quarter))
    pos = torch.arange(side).float()
    x = torch.cat([torch.sin(pos[:, None] * freqs), torch.cos(pos[:, None] * freqs)], dim=1)  # (side, dim/2)
    cols = x.repeat(side, 1)  # token i is at column i % side
    rows = x.repeat_interleave(side, dim=0)  # and row i // side
    return torch.cat([cols, rows], dim=1)


class LiteCaptioner(nn.Module):
    def __init__(self, config: LiteConfig, vocab_size: int, encoder: EfficientNetLite0 | None = None) -> None:
        from transformers import Blip2QFormerConfig, Blip2QFormerModel, LlamaConfig, LlamaForCausalLM

        super().__init__()
        self.config = config
        self.encoder = encoder or load_pretrained()
        for p in self.encoder.parameters():
            p.requires_grad = False
        for p in self.encoder.tail_parameters(config.finetune_tail) if config.finetune_tail else []:
            p.requires_grad = True
        h = config.hidden
        self.query_tokens = nn.Parameter(torch.randn(1, config.queries, h) * 0.02)
        # Convolution features barely know where they are, and relations ("to the left of") need it:
        # each visual token carries its 2-D position as extra channels (features left untouched).
        self.register_buffer("visual_position", sincos_2d(7, POSITION_DIM).unsqueeze(0), persistent=False)
        self.qformer = Blip2QFormerModel(
            Blip2QFormerConfig(
                hidden_size=h, num_hidden_layers=config.qformer_layers, num_attention_heads=config.heads, intermediate_size=2 * h,
                encoder_hidden_size=1280 + POSITION_DIM, cross_attention_frequency=1, vocab_size=8,
            )
        )  # fmt: skip
        d = config.decoder_hidden
        self.projection = nn.Linear(h, d)
        self.llm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab_size, hidden_size=d, intermediate_size=config.llm_intermediate or 2 * d,
                num_hidden_layers=config.llm_layers, num_attention_heads=config.heads, num_key_value_heads=config.heads,
                max_position_embeddings=64,
                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
            )
        )  # fmt: skip

    def train(self, mode: bool = True) -> LiteCaptioner:
        super().train(mode)
        self.encoder.eval()  # BatchNorm statistics stay ImageNet's; only weights are fine-tuned
        return self

    def trunk(self, pixels: torch.Tensor) -> torch.Tensor:
        """The frozen part of the encoder; its output can be cached for training."""
        with torch.no_grad():
            return self.encoder.trunk(pixels, max(self.config.finetune_tail, 1))

    def query_outputs(self, trunk: torch.Tensor) -> torch.Tensor:
        """The Q-Former's outputs, (B, Q, H): what the decoder prefix and the content embedding are made of."""
        visual = self.encoder.tokens_from_trunk(trunk, max(self.config.finetune_tail, 1))
        table: torch.Tensor = self.visual_position  # type: ignore[assignment]  # a registered buffer
        position = table.expand(visual.shape[0], -1, -1).to(visual.dtype)
        visual = torch.cat([visual, position], dim=-1)
        queries = self.query_tokens.expand(visual.shape[0], -1, -1)
        out: torch.Tensor = self.qformer(query_embeds=queries, encoder_hidden_states=visual, return_dict=True).last_hidden_state
        return out

    def prefix(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.projection(self.query_outputs(trunk))

    def loss(self, trunk: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on the caption tokens only. ids: (B, T) padded with PAD."""
        prefix = self.prefix(trunk)
        embeds = torch.cat([prefix, self.llm.get_input_embeddings()(ids)], dim=1)
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long), (ids != PAD).long()], dim=1)
        labels = torch.cat([torch.full(prefix.shape[:2], -100), ids.masked_fill(ids == PAD, -100)], dim=1)
        labels[:, prefix.shape[1]] = -100  # <s> is given, not predicted
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def generate(self, trunk: torch.Tensor, max_new_tokens: int, queries: torch.Tensor | None = None) -> list[list[int]]:
        """Greedy decoding; deterministic. ``queries``: ``query_outputs(trunk)``, when the caller has them already."""
        prefix = self.projection(self.query_outputs(trunk) if queries is None else queries)
        dev = prefix.device
        bos = self.llm.get_input_embeddings()(torch.full((prefix.shape[0], 1), BOS, device=dev))
        embeds = torch.cat([prefix, bos], dim=1)
        out: torch.Tensor = self.llm.generate(  # type: ignore[misc,assignment]
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=dev), max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=1, eos_token_id=EOS, pad_token_id=PAD, min_new_tokens=self.config.min_new_tokens or None,
        )  # fmt: skip
        rows = []
        for row in out.tolist():
            ids = [i for i in row if i not in (PAD, BOS)]
            rows.append(ids[: ids.index(EOS)] if EOS in ids else ids)
        return rows


def pooled_embedding(queries: torch.Tensor) -> torch.Tensor:
    """The content embedding of a batch: the Q-Former's query outputs mean-pooled and L2-normalized, (B, H)."""
    return torch.nn.functional.normalize(queries.float().mean(dim=1), dim=-1)


def save_model_dir(
    model: LiteCaptioner, vocab: WordVocab, out_dir: Path, *, name: str, trained: bool, extra: dict[str, Any] | None = None
) -> Manifest:
    """Write the model directory; the frozen encoder weights stay in their package (fp16 for the rest)."""
    from safetensors.torch import save_file

    tail = _tail_prefixes(model)
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.") or k.removeprefix("encoder.").startswith(tail)}
    state = {k: (v.to(torch.float16) if v.is_floating_point() else v).detach().contiguous() for k, v in kept.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "weights.safetensors"))
    (out_dir / "vocab.json").write_text(json.dumps({"words": vocab.words}, indent=0))
    digest = hashlib.sha256((out_dir / "weights.safetensors").read_bytes()).hexdigest()[:8]
    manifest = Manifest(
        name=name, version=f"{name}@{digest}", trained=trained, max_new_tokens=model.config.max_new_tokens, image_size=IMAGE_SIZE,
        kind=LITE,
    )  # fmt: skip
    meta = {**asdict(manifest), "config": asdict(model.config), **(extra or {})}
    (out_dir / MANIFEST).write_text(json.dumps(meta, indent=2) + "\n")
    return manifest


def _tail_prefixes(model: LiteCaptioner) -> tuple[str, ...]:
    """State-dict prefixes of the fine-tuned encoder tail (none when the encoder is wholly frozen)."""
    n, tail = len(model.encoder._blocks), model.config.finetune_tail
    if not tail:
        return ()
    return (*(f"_blocks.{i}." for i in range(n - tail, n)), "_conv_head.", "_bn1.")


def load_model_dir(model_dir: Path) -> tuple[LiteCaptioner, WordVocab]:
    from safetensors.torch import load_file

    meta = json.loads((model_dir / MANIFEST).read_text())
    vocab = WordVocab(json.loads((model_dir / "vocab.json").read_text())["words"])
    model = LiteCaptioner(LiteConfig(**meta["config"]), len(vocab.words))
    state = {k: v.float() for k, v in load_file(str(model_dir / "weights.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise ValueError(f"{model_dir}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), vocab
