"""Triton Python backend for the mmfeat captioner.

One batched ``generate`` per ``execute`` over every image of every request; exactly one response
per request; a request whose image cannot be decoded gets its own INVALID_ARG error and the rest of
the batch is still captioned.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from mmfeat.captioner import CaptionerRuntime
from mmfeat.errors import MediaRejected


def _param(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        model_dir = Path(_param(config, "model_dir", "../../mmfeat/assets/captioner"))
        if not model_dir.is_absolute():
            model_dir = (Path(args["model_repository"]) / model_dir).resolve()
        if not ((model_dir / "mmfeat.json").exists() or (model_dir / "config.json").exists()):
            raise pb_utils.TritonModelException(
                f"captioner: model directory {model_dir} has no mmfeat.json or config.json; set model_dir in config.pbtxt"
            )
        self.max_pixels = int(_param(config, "max_pixels", "40000000"))
        device = "cpu"
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        threads = int(_param(config, "num_threads", "0")) or None
        self.runtime = CaptionerRuntime(model_dir, device=device, num_threads=threads)
        self.version = self.runtime.version
        # PIL releases the GIL while decoding: a batch's images decode in parallel.
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="decode")
        pb_utils.Logger.log_info(f"captioner: loaded {model_dir} version={self.version} on {device}")

    def _request_inputs(self, request: Any) -> tuple[list[Any], list[str]]:
        raw = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        prompt_t = pb_utils.get_input_tensor_by_name(request, "PROMPT")
        prompts = [b"" for _ in raw] if prompt_t is None else list(prompt_t.as_numpy().reshape(-1))
        if len(prompts) != len(raw):
            raise MediaRejected(f"{len(raw)} images but {len(prompts)} prompts", reason="bad_request")
        images = [self.runtime.decode(bytes(b), self.max_pixels) for b in raw]
        return images, [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in prompts]

    def _try_inputs(self, request: Any) -> tuple[list[Any], list[str]] | Exception:
        try:
            return self._request_inputs(request)
        except (MediaRejected, UnicodeDecodeError) as e:
            return e

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        images: list[Any] = []
        prompts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start, count) into images
        decoded = list(self.pool.map(self._try_inputs, requests))
        for i, result in enumerate(decoded):
            try:
                if isinstance(result, Exception):
                    raise result
                imgs, prs = result
            except (MediaRejected, UnicodeDecodeError) as e:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
                continue
            spans.append((i, len(images), len(imgs)))
            images.extend(imgs)
            prompts.extend(prs)
        if images:
            try:
                captions = self.runtime.caption(images, prompts)
            except Exception as e:  # a model failure fails this batch's requests, not the server
                for i, _, _ in spans:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"captioner failed: {e}"))
                return responses
            for i, start, count in spans:
                batch = captions[start : start + count]
                width = max((len(c.token_ids) for c in batch), default=0)
                ids = np.full((count, width), -1, dtype=np.int64)  # -1 pads ragged rows in a multi-image request
                for row, c in enumerate(batch):
                    ids[row, : len(c.token_ids)] = c.token_ids
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("CAPTION", np.array([[c.text.encode()] for c in batch], dtype=np.object_)),
                        pb_utils.Tensor("TOKEN_IDS", ids),
                        pb_utils.Tensor("CAPTIONER_VERSION", np.array([[self.version.encode()]] * count, dtype=np.object_)),
                    ]
                )
        return responses

    def finalize(self) -> None:
        self.pool.shutdown(wait=False)
