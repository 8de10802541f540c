"""The captioner's Triton contract: config.pbtxt declares exactly its tensors, and what one side writes the other reads."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2

from mmfeat import triton_contract as contract
from mmfeat.settings import PROJECT_ROOT


def declared(tensors: object) -> set[tuple[str, str, tuple[int, ...], bool]]:
    """(name, data type, dims, optional) of config.pbtxt's tensors (outputs have no `optional`)."""
    return {(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims), bool(getattr(t, "optional", False))) for t in tensors}  # type: ignore[attr-defined]


def test_config_pbtxt_declares_the_contracts_tensors() -> None:
    models = {"triton_models/captioner": contract.CAPTIONER, "bench/triton_models/null_captioner": contract.CAPTIONER,
              "triton_models/ocr": contract.OCR, "triton_models/asr": contract.ASR}  # fmt: skip
    for folder, model in models.items():
        config = model_config_pb2.ModelConfig()
        text_format.Parse((PROJECT_ROOT / folder / "config.pbtxt").read_text(), config)
        want_in = {(t.name, t.config_type, t.dims, t.optional) for t in model.inputs}
        want_out = {(t.name, t.config_type, t.dims, False) for t in model.outputs}
        assert declared(config.input) == want_in, folder
        assert declared(config.output) == want_out, folder


def test_a_request_and_an_answer_read_back_on_the_other_side() -> None:
    arrays = contract.request_arrays(b"\x89PNG...", "describe")
    media, prompts = contract.read_request(arrays.get)
    assert (media, prompts) == ([b"\x89PNG..."], ["describe"])
    assert contract.PROMPT.name not in contract.request_arrays(b"x", "")  # optional: absent when empty
    assert contract.read_request(contract.request_arrays(b"x", "").get) == ([b"x"], [""])

    caps = [contract.Caption("a dog", [5, 6, 7]), contract.Caption("two cats", [8])]
    answer = contract.answer_arrays(caps, "cap@1")
    assert answer["TOKEN_IDS"].tolist() == [[5, 6, 7], [8, -1, -1]]  # ragged rows padded
    one = {name: a[1:2] for name, a in answer.items()}  # the client reads one item's answer
    assert contract.read_answer(one.get) == (contract.Caption("two cats", [8]), "cap@1")


def test_an_ocr_answer_reads_back_and_is_bounded() -> None:
    answer = contract.text_answer_arrays(["OPEN\nSUNDAY", "x" * 30_000], "ocr@1")
    assert contract.read_text_answer({k: a[:1] for k, a in answer.items()}.get) == ("OPEN\nSUNDAY", "ocr@1")
    text, _ = contract.read_text_answer({k: a[1:] for k, a in answer.items()}.get)
    assert len(text) == contract.MAX_TEXT_CHARS
    with pytest.raises(ValueError, match="TEXT is missing"):
        contract.read_text_answer({"OCR_VERSION": answer["OCR_VERSION"]}.get)


def test_an_answer_without_a_tensor_is_an_error() -> None:
    with pytest.raises(ValueError, match="CAPTION"):
        contract.read_answer({"TOKEN_IDS": np.zeros((1, 1), np.int64)}.get)


def test_the_embedding_travels_as_float16_and_a_bad_one_is_the_items_error() -> None:
    vec = contract.pack_embedding([0.6, -0.8, 0.0])
    caps = [contract.Caption("a dog", [5], vec), contract.Caption("a cat", [6], contract.pack_embedding([1.0, 0.0, 0.0]))]
    answer = contract.answer_arrays(caps, "cap@1")
    assert answer["EMBEDDING"].dtype == np.float16 and answer["EMBEDDING"].shape == (2, 3)
    got, _ = contract.read_answer({name: a[:1] for name, a in answer.items()}.get)
    assert got == caps[0] and got.embedding_array().tolist() == pytest.approx([0.6, -0.8, 0.0], abs=1e-3)
    # a model without the output (the contract before it): the caption has no embedding
    old = {k: v for k, v in answer.items() if k != "EMBEDDING"}
    assert contract.read_answer({name: a[:1] for name, a in old.items()}.get)[0].embedding == b""
    bad = dict(answer, EMBEDDING=np.array([[np.nan, 0, 0]], np.float16))
    with pytest.raises(ValueError, match="non-finite"):
        contract.read_answer({name: a[:1] for name, a in bad.items()}.get)
    with pytest.raises(ValueError, match="differ in width"):
        contract.answer_arrays([caps[0], contract.Caption("x", [1], contract.pack_embedding([1.0]))], "cap@1")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([np.float16, np.float32, np.float64, np.int64]),
    st.lists(st.integers(0, 80), min_size=1, max_size=3) | st.just([1, 5000]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_any_embedding_tensor_is_read_or_refused_as_that_items_error(dtype: type, shape: list[int], fill: float) -> None:
    """Whatever a server answers in EMBEDDING, the client gets a caption with a finite float16 embedding of at most
    MAX_EMBEDDING_DIM values, or a ValueError (which becomes that request's record error), never anything else."""
    answer = contract.answer_arrays([contract.Caption("a dog", [5])], "cap@1")
    try:
        emb = np.full(shape, fill).astype(dtype)
    except (OverflowError, ValueError):
        return
    answer["EMBEDDING"] = emb
    try:
        cap, _ = contract.read_answer(answer.get)
    except ValueError:
        return
    values = cap.embedding_array()
    assert len(values) == emb.size <= contract.MAX_EMBEDDING_DIM and np.isfinite(values).all()
