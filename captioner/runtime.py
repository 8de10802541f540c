"""The captioner's runtime: a registry of engines keyed by the manifest's ``kind``, each captioning a batch
with ONE batched generate. The Triton Python backend (triton_models/captioner/1/model.py) serves a
``CaptionerRuntime``; so do the evaluation and the ranker's world.

Adding an architecture is one engine class and one line in ``ENGINES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from captioner.configuration import HF_BLIP2, LITE, Manifest, read_manifest
from mmfeat.triton_contract import Caption, pack_embedding


class Engine(Protocol):
    def caption(self, images: Sequence[Any], prompts: Sequence[str]) -> list[Caption]:
        """Greedy-decode one caption per image; deterministic for a given model and input."""
        ...


class HFBlip2Engine:
    """A Hugging Face ``Blip2ForConditionalGeneration`` directory (a real BLIP-2, or the tiny untrained one)."""

    def __init__(self, model_dir: Path, manifest: Manifest, device: str) -> None:
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        self.manifest, self.device = manifest, device
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.processor.tokenizer.padding_side = "left"  # decoder-only generation pads on the left
        model = Blip2ForConditionalGeneration.from_pretrained(model_dir)
        self.model = model.to(device).eval()  # type: ignore[arg-type]  # transformers' stubs type .to() oddly

    def caption(self, images: Sequence[Any], prompts: Sequence[str]) -> list[Caption]:
        import torch

        from captioner.modeling.lite import pooled_embedding

        inputs = self.processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True).to(self.device)
        seen: list[torch.Tensor] = []
        # generate runs the Q-Former once per batch; a hook keeps its outputs, so the embedding costs no second pass
        hook = self.model.qformer.register_forward_hook(lambda _m, _i, out: seen.append(out[0]))
        try:
            with torch.inference_mode():
                out = self.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=self.manifest.max_new_tokens)
        finally:
            hook.remove()
        vectors = pooled_embedding(seen[0]).cpu().numpy()
        new_tokens = out[:, inputs["input_ids"].shape[1] :] if out.shape[1] > inputs["input_ids"].shape[1] else out
        tok = self.processor.tokenizer
        special = set(tok.all_special_ids)
        captions = []
        for row, vector in zip(new_tokens.tolist(), vectors, strict=True):
            ids = [i for i in row if i not in special]
            text = tok.decode(ids, skip_special_tokens=True).strip()
            captions.append(Caption(text=text, token_ids=ids, embedding=pack_embedding(vector)))
        return captions


class LiteEngine:
    """The default ``lite0-qformer-llama`` (captioner/modeling/lite.py); it takes no prompt.

    From a model directory, or from a model in memory (``model`` and ``vocab``: the evaluation's untrained baseline)."""

    def __init__(
        self, model_dir: Path | None, manifest: Manifest | None, device: str = "cpu", *, model: Any = None, vocab: Any = None
    ) -> None:
        from captioner.modeling.lite import load_model_dir

        if model_dir is not None:
            model, vocab = load_model_dir(model_dir)
        assert model is not None and vocab is not None
        self.model, self.vocab = model.eval(), vocab
        self.max_new_tokens = manifest.max_new_tokens if manifest else model.config.max_new_tokens
        if device.startswith("cuda"):
            self.model.half()  # the decoder in fp16 on a GPU, as it would be served
        self.model.to(device)
        self.device = device

    def caption(self, images: Sequence[Any], prompts: Sequence[str] = ()) -> list[Caption]:
        import torch

        from captioner.modeling.lite import pooled_embedding
        from captioner.processing import to_tensor

        pixels = to_tensor(list(images)).to(self.device, next(self.model.parameters()).dtype)
        with torch.inference_mode():
            trunk = self.model.trunk(pixels)
            queries = self.model.query_outputs(trunk)
            rows = self.model.generate(trunk, self.max_new_tokens, queries)
            vectors = pooled_embedding(queries).cpu().numpy()
        return [
            Caption(text=self.vocab.decode(ids), token_ids=ids, embedding=pack_embedding(v)) for ids, v in zip(rows, vectors, strict=True)
        ]


ENGINES: dict[str, Callable[[Path, Manifest, str], Engine]] = {HF_BLIP2: HFBlip2Engine, LITE: LiteEngine}


class CaptionerRuntime:
    """A loaded model directory, served by the engine its manifest's kind names."""

    def __init__(self, model_dir: Path, *, device: str = "cpu", num_threads: int | None = None) -> None:
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.manifest = read_manifest(model_dir)
        make = ENGINES.get(self.manifest.kind)
        if make is None:
            raise ValueError(f"{model_dir}: unknown captioner kind {self.manifest.kind!r} (known: {', '.join(sorted(ENGINES))})")
        self.engine = make(model_dir, self.manifest, device)
        self.device = device

    @property
    def version(self) -> str:
        return self.manifest.version

    def decode(self, data: bytes, max_pixels: int) -> Any:
        """Encoded image bytes -> the RGB image this model captions."""
        from captioner.processing import decode_image

        return decode_image(data, max_pixels, self.manifest.image_size)

    def caption(self, images: Sequence[Any], prompts: Sequence[str]) -> list[Caption]:
        return self.engine.caption(images, prompts)
