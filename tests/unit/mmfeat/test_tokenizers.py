from pathlib import Path

import pytest

from captioner.world.clipart import caption_corpus
from mmfeat.errors import ConfigError
from mmfeat.normalize import normalize_caption
from mmfeat.settings import ASSETS
from mmfeat.tokenizers import (
    SP_FILE,
    UNK_WORD_ID,
    WORD_FILE,
    HashingTokenizer,
    build_word_vocab,
    load_tokenizers,
    train_sentencepiece,
)

TOK_DIR = ASSETS / "tokenizers"


def test_committed_tokenizers_are_what_the_command_trains(tmp_path: Path) -> None:
    """`mmfeat train-tokenizers` defaults reproduce the committed files byte for byte."""
    corpus = [normalize_caption(c) for c in caption_corpus(20000, 0)]
    train_sentencepiece(corpus, tmp_path / SP_FILE, 128)
    build_word_vocab(corpus, tmp_path / WORD_FILE)
    assert (tmp_path / SP_FILE).read_bytes() == (TOK_DIR / SP_FILE).read_bytes()
    assert (tmp_path / WORD_FILE).read_bytes() == (TOK_DIR / WORD_FILE).read_bytes()


def test_sentencepiece_round_trip_and_version() -> None:
    sp = load_tokenizers(["sp"], TOK_DIR, 16)["sp"]
    ids = sp.encode("a man walking a dog")
    assert ids and all(isinstance(i, int) for i in ids)
    assert "".join(sp.decode(ids)).replace("▁", " ").strip() == "a man walking a dog"
    assert sp.version.startswith("sp-unigram-128@")


def test_word_vocab_maps_unknown_words_to_unk() -> None:
    word = load_tokenizers(["word"], TOK_DIR, 16)["word"]
    ids = word.encode("a dog zebra")
    assert ids[-1] == UNK_WORD_ID
    assert word.decode(ids[:2]) == ["a", "dog"]
    assert UNK_WORD_ID not in ids[:2]


def test_hashing_is_stable_and_bounded() -> None:
    h = HashingTokenizer(buckets=1000)
    ids = h.encode("a dog a dog")
    assert ids[0] == ids[2] and ids[1] == ids[3] and ids[0] != ids[1]
    assert all(0 <= i < 1000 for i in ids)
    # blake2b, not Python's salted hash(): the same across processes and machines
    assert HashingTokenizer(buckets=1 << 20).encode("dog") == [HashingTokenizer(buckets=1 << 20).encode("dog")[0]]
    assert h.version == "hash-blake2b-1000"


def test_unknown_tokenizer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown tokenizer 'bpe'"):
        load_tokenizers(["bpe"], TOK_DIR, 16)


def test_missing_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train-tokenizers"):
        load_tokenizers(["sp"], tmp_path, 16)
