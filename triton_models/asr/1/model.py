"""Triton Python backend for speech (readers/asr.py): one response per request; a request whose audio is
refused (odd bytes, over the duration cap) gets its own INVALID_ARG error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from mmfeat import triton_contract as contract
from readers.asr import AsrRuntime, load_engine


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        max_seconds = float(params.get("max_seconds", {}).get("string_value", "600"))
        model = str(params.get("model_dir", {}).get("string_value", "pocketsphinx"))
        if model != "pocketsphinx" and not Path(model).is_absolute():
            model = str((Path(args["model_repository"]) / model).resolve())
        device = f"cuda:{args['model_instance_device_id']}" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.runtime = AsrRuntime(load_engine(model, device), max_seconds)
        pb_utils.Logger.log_info(f"asr: loaded version={self.runtime.version}")

    def _one(self, request: Any) -> Any:
        tensor = pb_utils.get_input_tensor_by_name(request, contract.AUDIO.name)
        if tensor is None:
            raise ValueError(f"tensor {contract.AUDIO.name} is missing")
        texts = [self.runtime.transcribe(bytes(b)) for b in tensor.as_numpy().reshape(-1)]
        arrays = contract.text_answer_arrays(texts, self.runtime.version, contract.ASR_VERSION)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, a) for name, a in arrays.items()])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as e:  # this request's audio, not the batch's
                text = f"{type(e).__name__}: {e}"[:1000]
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(text, pb_utils.TritonError.INVALID_ARG)))
        return responses
