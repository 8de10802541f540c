"""The default captioner's architecture: shapes, a few training steps lower the loss, save/load."""

from pathlib import Path

import torch
from PIL import Image

from captioner.configuration import LiteConfig, read_manifest
from captioner.modeling.lite import LiteCaptioner, load_model_dir, save_model_dir
from captioner.processing import WordVocab, letterbox, to_tensor
from captioner.runtime import CaptionerRuntime

TINY = LiteConfig(hidden=32, qformer_layers=1, llm_layers=1, heads=2, queries=4, max_new_tokens=6, finetune_tail=1)


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (100 + 10 * i, 80), ((50 * i) % 256, 90, 200)) for i in range(n)]


def test_letterbox_keeps_aspect_on_white() -> None:
    out = letterbox(Image.new("RGB", (400, 100), (0, 0, 0)))
    assert out.size == (224, 224)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((112, 112)) == (0, 0, 0)
    assert to_tensor([out]).shape == (1, 3, 224, 224)


def test_shapes_and_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    vocab = WordVocab(["a", "dog", "cat", "next", "to"])
    model = LiteCaptioner(TINY, len(vocab.words)).train()
    trunk = model.trunk(to_tensor(images(4)))
    assert trunk.shape == (4, 192, 7, 7)
    assert model.prefix(trunk).shape == (4, TINY.queries, TINY.hidden)
    ids = torch.tensor([vocab.encode("a dog next to a cat")] * 4)
    params = [p for p in model.parameters() if p.requires_grad]
    assert any(p is q for p in params for q in model.encoder._conv_head.parameters())  # the tail is trained
    assert not any(p is q for p in params for q in model.encoder._conv_stem.parameters())  # the trunk is frozen
    opt = torch.optim.AdamW(params, lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model.loss(trunk, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert [vocab.decode(r) for r in model.generate(trunk, 6)] == ["a dog next to a cat"] * 4


def test_save_load_and_serve_through_the_captioner_runtime(tmp_path: Path) -> None:
    torch.manual_seed(1)
    vocab = WordVocab(["a", "dog", "cat"])
    model = LiteCaptioner(TINY, len(vocab.words)).eval()
    manifest = save_model_dir(model, vocab, tmp_path, name="tiny", trained=False)
    assert read_manifest(tmp_path) == manifest and manifest.kind == "lite0-qformer-llama"
    assert (tmp_path / "weights.safetensors").stat().st_size < 3_000_000  # the frozen encoder is not copied
    runtime = CaptionerRuntime(tmp_path)
    imgs = images(3)
    got = runtime.caption(imgs, [""] * 3)
    loaded, loaded_vocab = load_model_dir(tmp_path)
    assert loaded_vocab.words == vocab.words
    expected = loaded.generate(loaded.trunk(to_tensor(imgs)), TINY.max_new_tokens)
    assert [c.token_ids for c in got] == expected
    assert [c.text for c in got] == [vocab.decode(ids) for ids in expected]
    assert all(i >= len(("<pad>", "<s>", "</s>", "<unk>")) for c in got for i in c.token_ids)  # no special tokens leak
    assert runtime.version == manifest.version
    # weights survive the fp16 round trip to within fp16 precision
    for k, v in loaded.state_dict().items():
        if k.startswith(("qformer.", "llm.")) and v.is_floating_point():
            assert torch.allclose(v, model.state_dict()[k], atol=1e-2), k
