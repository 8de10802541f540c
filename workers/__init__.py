"""The caption worker: media.uploads -> Triton captioner -> media.item-features.v1."""
