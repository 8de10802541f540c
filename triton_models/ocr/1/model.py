"""Triton Python backend for on-screen text (readers/ocr.py): one response per request; an image that cannot
be decoded gets its own INVALID_ARG error and the rest of the batch is still read."""

from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from mmfeat import triton_contract as contract
from mmfeat.errors import MediaRejected
from readers.ocr import OcrRuntime, OcrSettings


def _param(config: dict[str, Any], key: str, default: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", default))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        settings = OcrSettings(
            min_score=float(_param(config, "min_score", "0.5")), max_side=int(_param(config, "max_side", "1280")),
            max_pixels=int(_param(config, "max_pixels", "40000000")), threads=int(_param(config, "num_threads", "0")),
        )  # fmt: skip
        self.runtime = OcrRuntime(settings)
        pb_utils.Logger.log_info(f"ocr: loaded version={self.runtime.version}")

    def _read(self, request: Any) -> Any:
        tensor = pb_utils.get_input_tensor_by_name(request, contract.IMAGE.name)
        if tensor is None:
            raise ValueError(f"tensor {contract.IMAGE.name} is missing")
        texts = [self.runtime.read(bytes(m)) for m in tensor.as_numpy().reshape(-1)]
        arrays = contract.text_answer_arrays(texts, self.runtime.version)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, a) for name, a in arrays.items()])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._read(request))
            except MediaRejected as e:  # this request's image, not the batch's
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)[:1000], pb_utils.TritonError.INVALID_ARG)))
            except Exception as e:
                text = f"{type(e).__name__}: {e}"[:1000]
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(text, pb_utils.TritonError.INVALID_ARG)))
        return responses
