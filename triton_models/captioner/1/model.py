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

import triton_python_backend_utils as pb_utils

from captioner.runtime import CaptionerRuntime
from mmfeat import triton_contract as contract
from mmfeat.errors import MediaRejected


def _param(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        model_dir = Path(_param(config, "model_dir", "../../captioner/assets/default"))
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
        def get(name: str) -> Any:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        media, prompts = contract.read_request(get)
        return [self.runtime.decode(m, self.max_pixels) for m in media], prompts

    def _try_inputs(self, request: Any) -> tuple[list[Any], list[str]] | Exception:
        try:
            return self._request_inputs(request)
        except Exception as e:  # this request's inputs, not the batch's: it alone gets the error
            return e

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        images: list[Any] = []
        prompts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start, count) into images
        decoded = list(self.pool.map(self._try_inputs, requests))
        for i, result in enumerate(decoded):
            if isinstance(result, Exception):
                text = str(result) if isinstance(result, MediaRejected) else f"{type(result).__name__}: {result}"
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(text[:1000], pb_utils.TritonError.INVALID_ARG))
                continue
            imgs, prs = result
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
                arrays = contract.answer_arrays(captions[start : start + count], self.version)
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, a) for name, a in arrays.items()])
        return responses

    def finalize(self) -> None:
        self.pool.shutdown(wait=False)
