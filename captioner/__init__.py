"""The captioning stage: a BLIP-2-style captioner (image encoder -> Q-Former -> LLaMA decoder), laid out like
transformers' model folders.

- configuration.py  the manifest of a model directory (kind, version, trained) and the default architecture's config
- modeling/         the image encoder (EfficientNet-Lite0), the default captioner (Q-Former + LLaMA), a tiny HF BLIP-2
- processing.py     media bytes to model inputs (decode, letterbox, normalize) and the word vocabulary
- runtime.py        a registry of engines keyed by the manifest's kind; what Triton serves (triton_models/captioner)
- training/         `mmfeat train-captioner`
- evaluation/       `mmfeat eval-captioner`: caption quality against baselines
- world/            the clip-art world the default captioner is trained on (its word lists as JSON)
- assets/default/   the trained default model directory (committed)

The shared core (mmfeat/) does not import this package; the Triton model, the CLI and the ranker's world do.
"""
