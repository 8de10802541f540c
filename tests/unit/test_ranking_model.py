"""The DLRM ranker: shapes, weighted and unweighted id lists, and a few training steps lower the loss."""

from __future__ import annotations

import pytest
import torch

from ranking.model import DLRMRanker, IdList, MultiTaskLoss, RankerConfig


def batch(b: int, cfg: RankerConfig, seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, IdList], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = {
        "user": torch.randint(0, cfg.n_users, (b,), generator=g),
        "item": torch.randint(0, cfg.n_items, (b,), generator=g),
        "owner": torch.randint(0, cfg.n_owners, (b,), generator=g),
    }
    lists = {}
    for name, vocab in cfg.lists.items():
        lengths = torch.randint(0, 5, (b,), generator=g)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
        values = torch.randint(0, vocab, (int(lengths.sum()),), generator=g)
        weights = torch.rand(len(values), generator=g) if name in cfg.weighted else None
        lists[name] = IdList(values, offsets, weights)
    dense = torch.randn(b, cfg.dense_dim + cfg.visual_dim, generator=g)
    # labels that depend on the user id, so the model has something to learn
    labels = (ids["user"] % 2).float().unsqueeze(1).expand(b, len(cfg.tasks)).contiguous()
    return ids, lists, dense, labels


CFG = RankerConfig(n_users=10, n_items=20, n_owners=5, dense_dim=3, visual_dim=8, lists={"item_sp": 30, "profile_like": 30},
                   weighted=frozenset({"profile_like"}))  # fmt: skip


def test_shapes_and_empty_lists() -> None:
    model = DLRMRanker(CFG)
    ids, lists, dense, _ = batch(7, CFG)
    assert model(ids, lists, dense).shape == (7, len(CFG.tasks))
    no_lists = DLRMRanker(RankerConfig(n_users=10, n_items=20, n_owners=5, dense_dim=3, visual_dim=8))
    assert no_lists(ids, {}, dense).shape == (7, 5)


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model, loss_fn = DLRMRanker(CFG), MultiTaskLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    ids, lists, dense, labels = batch(64, CFG, seed=1)
    first = float(loss_fn(model(ids, lists, dense), labels).detach())
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn(model(ids, lists, dense), labels)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first * 0.5


@pytest.mark.parametrize("vocab", [30, 1 << 18])  # our tokenizers' size, and a hashed vocabulary
def test_one_pooling_per_table_equals_one_bag_per_list(vocab: int) -> None:
    cfg = RankerConfig(n_users=2, n_items=2, n_owners=1, dense_dim=1, lists={"item_sp": vocab, "profile_like": vocab, "item_word": 40},
                       weighted=frozenset({"profile_like"}),
                       shared={"item_sp": "sp", "profile_like": "sp", "item_word": "word"})  # fmt: skip
    model = DLRMRanker(cfg)
    _, lists, _, _ = batch(9, cfg, seed=3)
    lists["item_sp"].values[:2] = lists["item_sp"].values[0]  # an id twice in one list counts twice
    got = model.lists(lists)
    grad = torch.randn_like(got)
    (got * grad).sum().backward()
    got_grads = {t: model.lists.tables[t].weight.grad.clone() for t in ("sp", "word")}  # type: ignore[union-attr]
    model.zero_grad()
    wants = []
    for k, name in enumerate(sorted(cfg.lists)):
        table = model.lists.tables[cfg.shared[name]].weight
        mode = "sum" if name in cfg.weighted else "mean"
        want = torch.nn.functional.embedding_bag(
            lists[name].values, table, lists[name].offsets, mode=mode, per_sample_weights=lists[name].weights
        )
        assert torch.allclose(got[:, k], want, atol=1e-6), name
        wants.append(want)
    (torch.stack(wants, dim=1) * grad).sum().backward()
    for t, g in got_grads.items():
        assert torch.allclose(g, model.lists.tables[t].weight.grad, atol=1e-6), t  # type: ignore[arg-type]
    assert model.lists.tables["sp"] is not model.lists.tables["word"] and len(model.lists.tables) == 2


def test_a_batch_whose_lists_are_all_empty_pools_to_zeros() -> None:
    model = DLRMRanker(CFG)
    empty = IdList(torch.zeros(0, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.zeros(0))
    pooled = model.lists({"item_sp": empty, "profile_like": empty})
    assert pooled.shape == (4, 2, CFG.dim) and not pooled.any()


def test_lists_prepared_by_the_reader_give_the_same_logits() -> None:
    model = DLRMRanker(CFG)
    ids, lists, dense, _ = batch(11, CFG, seed=4)
    prepared = model.lists.prepare(lists)
    assert set(prepared) == {"item_sp", "profile_like"}  # no shared table here: one layout per list's own table
    assert prepared["item_sp"].matrix.shape == (11, 30) and prepared["item_sp"].matrix_t.shape == (30, 11)
    assert torch.equal(prepared["item_sp"].matrix.to_dense().t(), prepared["item_sp"].matrix_t.to_dense())
    assert torch.equal(model(ids, prepared, dense), model(ids, lists, dense))
