"""Answers every image with the same caption, without looking at it."""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

CAPTION = b"a small red apple next to a blue cup"
EMBEDDING = np.full(8, 8**-0.5, dtype=np.float16)  # a fixed unit vector: the contract's shape, no meaning


class TritonPythonModel:
    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:  # no model to batch: building the responses is all there is
            n = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("CAPTION", np.array([[CAPTION]] * n, dtype=np.object_)),
                        pb_utils.Tensor("TOKEN_IDS", np.tile(np.arange(3, 12, dtype=np.int64), (n, 1))),
                        pb_utils.Tensor("CAPTIONER_VERSION", np.array([[b"null-0"]] * n, dtype=np.object_)),
                        pb_utils.Tensor("EMBEDDING", np.tile(EMBEDDING, (n, 1))),
                    ]
                )
            )
        return responses
