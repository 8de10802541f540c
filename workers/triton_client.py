"""The captioner as the worker sees it: a Triton gRPC client that captions a micro-batch.

Each image is its own request, all sent at once, so Triton's dynamic batcher can merge them and a
bad image fails only its own request. Transport failures are retried; if the server is not ready
the caller gets CaptionerUnavailable and pauses consumption rather than dead-lettering anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from mmfeat.captioner import Caption
from mmfeat.errors import CaptionerUnavailable, CaptionRejected

REJECTED = "StatusCode.INVALID_ARGUMENT"


@dataclass(frozen=True)
class CaptionResult:
    caption: Caption
    captioner_version: str


class TritonCaptioner:
    def __init__(self, url: str, model: str, *, timeout_s: float, retries: int, backoff_s: float = 0.5) -> None:
        self.url, self.model = url, model
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._client = grpcclient.InferenceServerClient(url)

    def ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=2) and self._client.is_model_ready(self.model, client_timeout=2))
        except InferenceServerException:
            return False

    def _inputs(self, image: bytes, prompt: str) -> list[grpcclient.InferInput]:
        img = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
        img.set_data_from_numpy(np.array([[image]], dtype=np.object_))
        inputs = [img]
        if prompt:
            pr = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
            pr.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
            inputs.append(pr)
        return inputs

    def _send_all(self, items: Sequence[tuple[bytes, str]]) -> list[CaptionResult | InferenceServerException]:
        results: list[CaptionResult | InferenceServerException | None] = [None] * len(items)
        done = threading.Semaphore(0)

        def callback(i: int):  # type: ignore[no-untyped-def]
            def on_done(result: grpcclient.InferResult | None, error: InferenceServerException | None) -> None:
                if error is not None or result is None:
                    results[i] = error or InferenceServerException("empty response")
                else:
                    ids = [int(t) for t in result.as_numpy("TOKEN_IDS").reshape(-1) if t >= 0]
                    text = result.as_numpy("CAPTION").reshape(-1)[0].decode()
                    version = result.as_numpy("CAPTIONER_VERSION").reshape(-1)[0].decode()
                    results[i] = CaptionResult(Caption(text=text, token_ids=ids), version)
                done.release()

            return on_done

        for i, (image, prompt) in enumerate(items):
            try:
                self._client.async_infer(self.model, self._inputs(image, prompt), callback(i), client_timeout=self.timeout_s)
            except InferenceServerException as e:
                results[i] = e
                done.release()
        for _ in items:
            done.acquire()
        return [r for r in results if r is not None]

    def caption_many(self, items: Sequence[tuple[bytes, str]]) -> list[CaptionResult | CaptionRejected]:
        """Caption every (image, prompt); a per-image rejection is returned in its slot.

        Raises CaptionerUnavailable when requests keep failing and the server is not ready.
        """
        out: list[CaptionResult | CaptionRejected | None] = [None] * len(items)
        todo = list(range(len(items)))
        for attempt in range(self.retries + 1):
            sent = self._send_all([items[i] for i in todo])
            retry = []
            for i, res in zip(todo, sent, strict=True):
                if isinstance(res, CaptionResult):
                    out[i] = res
                elif res.status() == REJECTED:
                    out[i] = CaptionRejected(f"captioner rejected the image: {res.message()}")
                else:
                    retry.append(i)
            todo = retry
            if not todo:
                break
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        if todo:
            if not self.ready():
                raise CaptionerUnavailable(f"Triton at {self.url} is not ready (model {self.model})")
            for i in todo:  # the server is up but this request keeps failing: it is the record's fault
                out[i] = CaptionRejected(f"captioner failed {self.retries + 1} times on this image", reason="caption_failed")
        return [r for r in out if r is not None]

    def probe_version(self) -> str:
        """The version of the captioner serving now, from one tiny request (used before trusting a cache)."""
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (255, 255, 255)).save(buf, "PNG")
        res = self.caption_many([(buf.getvalue(), "")])[0]
        if not isinstance(res, CaptionResult):
            raise CaptionerUnavailable(f"Triton at {self.url} cannot caption a probe image: {res}")
        return res.captioner_version

    def close(self) -> None:
        self._client.close()
