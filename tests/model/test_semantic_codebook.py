"""The committed semantic-ID codebook is what `mmfeat train-tokenizers --only sid` makes, byte for byte: the same
scenes through the served captioner, the same seeded residual K-means."""

from __future__ import annotations

from pathlib import Path

import pytest

from captioner.world.clipart import OPENCLIPART
from mmfeat.semantic_ids import CODEBOOK_FILE
from mmfeat.settings import ASSETS

pytestmark = pytest.mark.skipif(not OPENCLIPART.is_dir(), reason="Debian's openclipart-png is not installed (make sysdeps)")


def test_the_committed_codebook_is_what_the_command_trains(tmp_path: Path) -> None:
    from mmfeat.cli.commands.models import train_tokenizers

    train_tokenizers(out_dir=tmp_path, only=["sid"])
    assert [p.name for p in tmp_path.iterdir()] == [CODEBOOK_FILE]  # A and B were not retrained
    assert (tmp_path / CODEBOOK_FILE).read_bytes() == (ASSETS / "tokenizers" / CODEBOOK_FILE).read_bytes()
