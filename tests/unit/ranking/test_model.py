"""The DLRM ranker: shapes, the table-batched embedding product against embedding/embedding_bag, the interaction's
backward, and a few training steps lower the loss."""

from __future__ import annotations

import pytest
import torch

from ranking.model import ID_FEATURES, DLRMRanker, EmbeddingArch, IdList, InteractionArch, MultiTaskLoss, RankerConfig


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


def logits(model: DLRMRanker, ids: dict[str, torch.Tensor], lists: dict[str, IdList], dense: torch.Tensor) -> torch.Tensor:
    return model(model.embeddings.prepare(ids, lists), dense)


def test_shapes_and_empty_lists() -> None:
    model = DLRMRanker(CFG)
    ids, lists, dense, _ = batch(7, CFG)
    assert logits(model, ids, lists, dense).shape == (7, len(CFG.tasks))
    no_lists = DLRMRanker(RankerConfig(n_users=10, n_items=20, n_owners=5, dense_dim=3, visual_dim=8))
    assert logits(no_lists, ids, {}, dense).shape == (7, 5)


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model, loss_fn = DLRMRanker(CFG), MultiTaskLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    ids, lists, dense, labels = batch(64, CFG, seed=1)
    layout = model.embeddings.prepare(ids, lists)
    first = float(loss_fn(model(layout, dense), labels).detach())
    for _ in range(40):
        opt.zero_grad()
        loss = loss_fn(model(layout, dense), labels)
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first * 0.5


@pytest.mark.parametrize("vocab", [30, 1 << 18])  # our tokenizers' size, and a hashed vocabulary
def test_the_table_batched_product_equals_a_lookup_per_id_and_a_bag_per_list(vocab: int) -> None:
    cfg = RankerConfig(n_users=6, n_items=4, n_owners=3, dense_dim=1, lists={"item_sp": vocab, "profile_like": vocab, "item_word": 40},
                       weighted=frozenset({"profile_like"}),
                       shared={"item_sp": "sp", "profile_like": "sp", "item_word": "word"})  # fmt: skip
    arch = EmbeddingArch(cfg)
    assert arch.features == ("user", "item", "owner", "item_sp", "item_word", "profile_like")
    assert len(arch.weight) == 6 + 4 + 3 + vocab + 40  # the shared table once
    ids, lists, _, _ = batch(9, cfg, seed=3)
    lists["item_sp"].values[:2] = lists["item_sp"].values[0]  # an id twice in one list counts twice
    got = arch(arch.prepare(ids, lists))
    grad = torch.randn_like(got)
    (got * grad).sum().backward()
    assert arch.weight.grad is not None
    got_grad = arch.weight.grad.clone()
    arch.zero_grad()
    wants = [torch.nn.functional.embedding(ids[n], arch.table(n)) for n in ID_FEATURES]
    for name in arch.lists:
        table = arch.table(cfg.shared[name])
        mode = "sum" if name in cfg.weighted else "mean"
        ids_k = lists[name]
        wants.append(torch.nn.functional.embedding_bag(ids_k.values, table, ids_k.offsets, mode=mode, per_sample_weights=ids_k.weights))
    want = torch.stack(wants, dim=1)
    for k, name in enumerate(arch.features):
        assert torch.allclose(got[:, k], want[:, k], atol=1e-6), name
    (want * grad).sum().backward()
    assert torch.allclose(got_grad, arch.weight.grad, atol=1e-5)


@pytest.mark.parametrize("vocab", [30, 1 << 18])  # the bag's entries merged by counting per key, and by sorting
def test_a_bag_pools_the_sum_of_its_lists_and_takes_an_id_in_both_once(vocab: int) -> None:
    profiles = ("profile_like", "profile_view")
    names = ("item_sp", *profiles)
    cfg = RankerConfig(n_users=6, n_items=4, n_owners=3, dense_dim=1, lists=dict.fromkeys(names, vocab),
                       weighted=frozenset(profiles), shared=dict.fromkeys(names, "sp"), bags={"profile": profiles})  # fmt: skip
    arch = EmbeddingArch(cfg)
    assert arch.features == ("user", "item", "owner", "item_sp", "profile")
    ids, lists, _, _ = batch(9, cfg, seed=5)
    like = lists["profile_like"]
    # every liked id also viewed, with another weight; the view list has ids of its own too
    extra = torch.arange(len(like.offsets)) % 30
    view_rows = [torch.cat([v, extra[b : b + 1]]) for b, v in enumerate(torch.tensor_split(like.values, like.offsets[1:]))]
    view_values = torch.cat(view_rows)
    view_offsets = torch.cumsum(torch.tensor([0] + [len(r) for r in view_rows[:-1]]), 0)
    lists["profile_view"] = IdList(view_values, view_offsets, torch.rand(len(view_values)))
    layout = arch.prepare(ids, lists)
    pairs = set()
    for n in profiles:
        lengths = torch.diff(lists[n].offsets, append=torch.tensor([len(lists[n].values)]))
        pairs |= {(int(e), int(v)) for e, v in zip(torch.repeat_interleave(torch.arange(9), lengths), lists[n].values, strict=True)}
    ids_and_items = 9 * 3 + len(lists["item_sp"].values)
    assert layout.matrix._nnz() == ids_and_items + len(pairs) < ids_and_items + len(like.values) + len(view_values)
    got = arch(layout)
    grad = torch.randn_like(got)
    (got * grad).sum().backward()
    assert arch.weight.grad is not None
    got_grad = arch.weight.grad.clone()
    arch.zero_grad()
    table = arch.table("sp")
    want = sum(
        torch.nn.functional.embedding_bag(lists[n].values, table, lists[n].offsets, mode="sum", per_sample_weights=lists[n].weights)
        for n in profiles
    )
    assert torch.allclose(got[:, 4], want, atol=1e-6)
    (want * grad[:, 4]).sum().backward()
    item = torch.nn.functional.embedding_bag(lists["item_sp"].values, table, lists["item_sp"].offsets, mode="mean")
    (item * grad[:, 3]).sum().backward()
    for k, name in enumerate(ID_FEATURES):
        (torch.nn.functional.embedding(ids[name], arch.table(name)) * grad[:, k]).sum().backward()
    assert torch.allclose(got_grad, arch.weight.grad, atol=1e-5)


@pytest.mark.parametrize(
    ("bags", "shared", "error"),
    [
        ({"p": ("profile_like",), "q": ("profile_like",)}, {}, "at most one bag"),
        ({"p": ("profile_share",)}, {}, "at most one bag"),
        ({"p": ()}, {}, "no bag empty"),
    ],
)
def test_bags_are_checked(bags: dict[str, tuple[str, ...]], shared: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        lists = {"profile_like": 5, "item_word": 5}
        EmbeddingArch(RankerConfig(n_users=2, n_items=2, n_owners=1, dense_dim=1, lists=lists, shared=shared, bags=bags))


def test_a_bag_over_two_tables_is_the_sum_of_their_lists_pooled() -> None:
    """Semantic-ID codes and prefixes, each its own table, pooled as one bag: each list's mean, added."""
    cfg = RankerConfig(n_users=5, n_items=4, n_owners=2, dense_dim=1, lists={"item_sid": 12, "item_sid_prefix": 40},
                       bags={"semantic": ("item_sid", "item_sid_prefix")})  # fmt: skip
    arch = EmbeddingArch(cfg)
    assert arch.features == ("user", "item", "owner", "semantic")
    ids, lists, _, _ = batch(7, cfg, seed=2)
    got = arch(arch.prepare(ids, lists))
    want = sum(
        torch.nn.functional.embedding_bag(lists[n].values, arch.table(n), lists[n].offsets, mode="mean")
        for n in ("item_sid", "item_sid_prefix")
    )
    assert torch.allclose(got[:, 3], want, atol=1e-6)
    grad = torch.randn_like(got)
    (got * grad).sum().backward()
    assert arch.weight.grad is not None
    got_grad = arch.weight.grad.clone()
    arch.zero_grad()
    (want * grad[:, 3]).sum().backward()
    for k, name in enumerate(ID_FEATURES):
        (torch.nn.functional.embedding(ids[name], arch.table(name)) * grad[:, k]).sum().backward()
    assert torch.allclose(got_grad, arch.weight.grad, atol=1e-5)


def test_a_batch_whose_lists_are_all_empty_pools_them_to_zeros() -> None:
    arch = EmbeddingArch(CFG)
    ids, _, _, _ = batch(4, CFG)
    empty = IdList(torch.zeros(0, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.zeros(0))
    pooled = arch(arch.prepare(ids, {"item_sp": empty, "profile_like": empty}))
    assert pooled.shape == (4, 5, CFG.dim) and not pooled[:, 3:].any()
    assert torch.equal(pooled[:, 0], arch.table("user")[ids["user"]])


def test_the_layout_holds_the_matrix_and_its_transpose() -> None:
    arch = EmbeddingArch(CFG)
    ids, lists, _, _ = batch(11, CFG, seed=4)
    layout = arch.prepare(ids, lists)
    rows = 10 + 20 + 5 + 30  # item_sp and profile_like: no shared table here, one table each
    assert layout.matrix.shape == (11 * 5, rows + 30) and layout.matrix_t.shape == (rows + 30, 11 * 5)
    assert torch.equal(layout.matrix.to_dense().t(), layout.matrix_t.to_dense())
    assert int(layout.matrix.to_dense()[:, :35].sum()) == 11 * 3  # each example's three ids, weight 1


def test_a_list_table_may_not_take_an_id_feature_name() -> None:
    with pytest.raises(ValueError, match="user"):
        EmbeddingArch(RankerConfig(n_users=2, n_items=2, n_owners=1, dense_dim=1, lists={"item_sp": 5}, shared={"item_sp": "user"}))


def test_the_interaction_backward_equals_autograd_through_the_gram_matrix() -> None:
    torch.manual_seed(0)
    inter = InteractionArch(5)
    dense = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    embedded = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)
    out = inter(dense, embedded)
    vectors = torch.cat([dense.unsqueeze(1), embedded], dim=1)
    rows, cols = torch.triu_indices(5, 5, offset=1)
    want = torch.cat([dense, torch.bmm(vectors, vectors.transpose(1, 2))[:, rows, cols]], dim=1)
    assert out.shape == (3, 4 + 10) and torch.allclose(out, want)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (dense, embedded), grad)
    expected = torch.autograd.grad(want, (dense, embedded), grad)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e)
