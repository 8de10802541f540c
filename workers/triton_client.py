"""The captioner and the OCR model as the worker sees them: Triton gRPC clients that answer a micro-batch.

Each image is its own request, all sent at once, so Triton's dynamic batcher can merge them and a
bad image fails only its own request. Transport failures are retried; if the server is not ready
the caller gets CaptionerUnavailable and pauses consumption rather than dead-lettering anything.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from captioner.configuration import read_manifest
from mmfeat import triton_contract as contract
from mmfeat.errors import CaptionerUnavailable, CaptionRejected, ConfigError, RecordError, ServiceError, as_record_error
from mmfeat.media import kind_of
from mmfeat.settings import PROJECT_ROOT
from mmfeat.triton_contract import Caption
from workers.passes import CaptionResult

REJECTED = "StatusCode.INVALID_ARGUMENT"


class TritonModel:
    """A Triton model called one request per item, all at once, with retries; the captioner and OCR are two."""

    what = "model"
    reason = "caption"  # the DLQ reason of an image this model rejects (and reason + "_failed": one it keeps failing)

    def __init__(self, url: str, model: str, *, timeout_s: float, retries: int, backoff_s: float = 0.5) -> None:
        self.url, self.model = url, model
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self._client = grpcclient.InferenceServerClient(url)

    def ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(client_timeout=2) and self._client.is_model_ready(self.model, client_timeout=2))
        except InferenceServerException:
            return False

    def _arrays(self, item: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _read(self, result: grpcclient.InferResult) -> CaptionResult:
        raise NotImplementedError

    def _probe_item(self) -> Any:
        raise NotImplementedError

    def _inputs(self, item: Any) -> list[grpcclient.InferInput]:
        inputs = []
        for name, array in self._arrays(item).items():
            tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")  # every input of both contracts is BYTES
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    def _send_all(self, items: Sequence[Any]) -> list[CaptionResult | InferenceServerException | RecordError]:
        results: list[CaptionResult | InferenceServerException | RecordError | None] = [None] * len(items)
        done = threading.Semaphore(0)

        def callback(i: int):  # type: ignore[no-untyped-def]
            def on_done(result: grpcclient.InferResult | None, error: InferenceServerException | None) -> None:
                try:
                    if error is not None:
                        results[i] = error
                    elif result is None:
                        results[i] = CaptionRejected(f"the {self.what} sent an empty response", reason=f"{self.reason}_failed")
                    else:
                        results[i] = self._read(result)
                except Exception as e:  # an answer we cannot read is this request's failure, not the batch's
                    results[i] = as_record_error(e)
                finally:
                    done.release()

            return on_done

        for i, item in enumerate(items):
            try:
                self._client.async_infer(self.model, self._inputs(item), callback(i), client_timeout=self.timeout_s)
            except InferenceServerException as e:
                results[i] = e
                done.release()
            except Exception as e:  # building this one request failed (say, a prompt that is not UTF-8-encodable)
                results[i] = as_record_error(e)
                done.release()
        for _ in items:
            done.acquire()
        return [r for r in results if r is not None]

    def call_many(self, items: Sequence[Any]) -> list[CaptionResult | RecordError]:
        """One result per item; a per-item rejection is returned in its slot.

        Raises CaptionerUnavailable when requests keep failing and the server is not ready.
        """
        out: list[CaptionResult | RecordError | None] = [None] * len(items)
        todo = list(range(len(items)))
        for attempt in range(self.retries + 1):
            sent = self._send_all([items[i] for i in todo])
            retry = []
            for i, res in zip(todo, sent, strict=True):
                if isinstance(res, CaptionResult | RecordError):
                    out[i] = res
                elif res.status() == REJECTED:
                    out[i] = CaptionRejected(f"{self.what} rejected the image: {res.message()}", reason=self.reason)
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
                out[i] = CaptionRejected(f"{self.what} failed {self.retries + 1} times on this image", reason=f"{self.reason}_failed")
        return [r for r in out if r is not None]

    def probe_version(self) -> str:
        """The version of the model serving now, from one tiny request (used before trusting a cache)."""
        res = self.call_many([self._probe_item()])[0]
        if not isinstance(res, CaptionResult):
            raise CaptionerUnavailable(f"Triton at {self.url} cannot answer a probe image ({self.model}): {res}")
        return res.captioner_version

    def close(self) -> None:
        self._client.close()


class TritonCaptioner(TritonModel):
    what = "captioner"

    def _arrays(self, item: tuple[bytes, str]) -> dict[str, np.ndarray]:
        return contract.request_arrays(*item)

    def _read(self, result: grpcclient.InferResult) -> CaptionResult:
        caption, version = contract.read_answer(result.as_numpy)
        return CaptionResult(caption, version)

    def _probe_item(self) -> tuple[bytes, str]:
        return kind_of("image").sample(), ""

    def caption_many(self, items: Sequence[tuple[bytes, str]]) -> list[CaptionResult | RecordError]:
        """Caption every (image, prompt); a per-image rejection is returned in its slot."""
        return self.call_many(items)


class TritonReader(TritonModel):
    """A model that reads text out of one input (triton_models/ocr: an image; triton_models/asr: a sound); the text
    comes back as a CaptionResult's ``caption.text``. Its contract names the input and the version tensor."""

    what = reason = "reader"
    source: contract.Tensor
    version: contract.Tensor

    def _arrays(self, item: bytes) -> dict[str, np.ndarray]:
        return {self.source.name: np.array([[item]], dtype=np.object_)}

    def _read(self, result: grpcclient.InferResult) -> CaptionResult:
        text, version = contract.read_text_answer(result.as_numpy, self.version)
        return CaptionResult(Caption(text, []), version)

    def read_many(self, items: Sequence[bytes]) -> list[CaptionResult | RecordError]:
        return self.call_many(items)


class TritonOcr(TritonReader):
    what = reason = "ocr"
    source, version = contract.IMAGE, contract.OCR_VERSION

    def _probe_item(self) -> bytes:
        return kind_of("image").sample()


class TritonAsr(TritonReader):
    what = reason = "asr"
    source, version = contract.AUDIO, contract.ASR_VERSION

    def _probe_item(self) -> bytes:
        return np.zeros(contract.AUDIO_RATE // 2, "<i2").tobytes()  # half a second of silence


CAPTIONER_MODEL = PROJECT_ROOT / "triton_models" / "captioner"


def model_name_for(model_dir: Path) -> str:
    """The Triton model name a captioner directory is served under: one name per captioner version."""
    version = read_manifest(model_dir).version
    return "captioner-" + re.sub(r"[^A-Za-z0-9_.-]", "-", version)


def serve_captioner(url: str, model_dir: Path, *, timeout_s: float = 300.0) -> str:
    """Make Triton serve the captioner in ``model_dir`` beside what it serves already; return its model name.

    Loads through the model repository API with our config.pbtxt and model.py, so the server must run
    with ``--model-control-mode explicit`` (the embedded one does). Idempotent: a loaded version is reused.
    """
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    if not model_dir.is_dir() or not ((model_dir / "mmfeat.json").exists() or (model_dir / "config.json").exists()):
        raise ConfigError(f"{model_dir} is not a captioner model directory (no mmfeat.json or config.json)")
    name = model_name_for(model_dir)
    client = grpcclient.InferenceServerClient(url)
    try:
        if client.is_model_ready(name, client_timeout=5):
            return name
        config = model_config_pb2.ModelConfig()
        text_format.Parse((CAPTIONER_MODEL / "config.pbtxt").read_text(), config)
        config.name = name
        config.parameters["model_dir"].string_value = str(model_dir.resolve())
        files = {"file:1/model.py": (CAPTIONER_MODEL / "1" / "model.py").read_bytes()}
        try:
            client.load_model(name, config=json_format.MessageToJson(config), files=files, client_timeout=timeout_s)
        except InferenceServerException as e:
            raise ServiceError(
                f"Triton at {url} would not load {model_dir} as {name}: {e.message()} "
                "(it must run with --model-control-mode explicit, or serve the model already: pass its name)"
            ) from e
        return name
    finally:
        client.close()
