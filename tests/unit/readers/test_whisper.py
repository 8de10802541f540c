"""The Whisper path of the ASR model, on a tiny randomly initialised Whisper (`mmfeat make-asr`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from readers.asr import WHISPER_MANIFEST, AsrRuntime, Whisper, load_engine, make_untrained_whisper


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whisper")
    make_untrained_whisper(out)
    return out


def test_a_whisper_directory_loads_and_transcribes_deterministically(tiny: Path) -> None:
    engine = load_engine(str(tiny))
    assert isinstance(engine, Whisper) and engine.version.startswith("untrained-tiny-whisper@")
    rng = np.random.default_rng(0)
    voice = (rng.standard_normal(16000 * 2) * 3000).astype("<i2")
    runtime = AsrRuntime(engine, max_seconds=60)
    first = runtime.transcribe(voice.tobytes())
    assert first and first == runtime.transcribe(voice.tobytes())  # greedy: the same words for the same sound
    vocab = set((tiny / "tokenizer.json").read_text().split('"'))
    assert all(w in vocab for w in first.split())  # words of its own vocabulary, no special tokens
    assert runtime.transcribe(np.zeros(16000, "<i2").tobytes()) == ""  # nothing voiced: nothing said


def test_the_version_is_reproducible_and_a_wrong_directory_is_one_clear_error(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert make_untrained_whisper(again) == load_engine(str(tiny)).version
    assert (again / WHISPER_MANIFEST).exists()
    with pytest.raises(ValueError, match="neither 'pocketsphinx' nor a Whisper directory"):
        load_engine(str(tmp_path))
