"""A DLRM-style multi-task ranker built from small named modules (after torchrec's models/dlrm.py).

Shapes (B = batch, D = embedding dim, F = 3 ids + the token lists outside bags + the bags: embedded features):

    ids        {user, item, owner}: LongTensor [B]      \
    lists      name -> IdList (values [N], offsets [B],  |-> EmbeddingArch.prepare -> Layout -> EmbeddingArch -> [B, F, D]
               optional weights [N])                    /
    dense      FloatTensor [B, dense_dim] (+ visual [B, V])   -> DenseArch   -> [B, D]
    interaction: pairwise dot products of the F + 1 vectors (upper triangle) ++ dense -> [B, (F+1)F/2 + D]
    OverArch  MLP -> [B, H];  TaskHeads: one logit per task -> [B, T]

The loss lives in ``MultiTaskLoss``, not in the model.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# torch flags every sparse CSR tensor as beta; the two products used here are tested against embedding/embedding_bag
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ID_FEATURES = ("user", "item", "owner")
DENSE_BAG_KEYS = 1 << 20  # up to this many (example, id) keys, a bag's entries are merged by counting, not sorting


@dataclass
class IdList:
    """A jagged batch of id lists: EmbeddingBag's ``input``/``offsets``/``per_sample_weights``."""

    values: torch.Tensor  # [N] long
    offsets: torch.Tensor  # [B] long, start of each example's list
    weights: torch.Tensor | None = None  # [N] float, for weighted lists (profiles)


@dataclass(frozen=True)
class RankerConfig:
    n_users: int
    n_items: int
    n_owners: int
    dense_dim: int
    visual_dim: int = 0
    lists: Mapping[str, int] = field(default_factory=dict)  # name -> vocabulary size
    weighted: frozenset[str] = frozenset()  # lists that carry per-id weights (summed, not averaged)
    # lists that share one embedding table (list -> table name), e.g. item tokens and profile tokens of one
    # tokenizer: the same token then has the same vector on both sides, so their dot product is a match score
    shared: Mapping[str, str] = field(default_factory=dict)
    # lists pooled as one bag (bag name -> lists), e.g. a user's profile per event type: the bag's
    # vector is the sum of its lists' pooled vectors, one vector where the lists would add one each. The
    # interaction's pairs grow with the square of its vectors, and an id in several of the lists enters the
    # bag once with its weights added, so a bag costs far less per step than its lists apart
    bags: Mapping[str, Sequence[str]] = field(default_factory=dict)
    tasks: Sequence[str] = ("like", "comment", "share", "time_spent", "consumption")
    dim: int = 16
    dense_hidden: Sequence[int] = (32,)
    over: Sequence[int] = (64, 32)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


@dataclass
class Layout:
    """A batch's embedded features laid out for pooling: the [B*F, R] pooling matrix over the R rows of all
    tables (row b*F + f: the weight of each table row in example b's feature f; an id feature is one row of
    weight 1) as a sparse CSR tensor, and its transpose, which the backward pass multiplies by. Built from
    the inputs alone (no parameters), so a batch reader builds it ahead of the model step, as torchrec's
    readers build a KeyedJaggedTensor."""

    matrix: torch.Tensor  # [B*F, R] sparse CSR, int32 indices
    matrix_t: torch.Tensor  # [R, B*F] sparse CSR
    batch: int
    features: int


def csr_starts(index: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers ([n + 1]: where each row's entries start) for entries in row order; ``index``: each
    entry's row."""
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(index, minlength=n).cumsum(0)])


def csr_pair(
    row_starts: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """A CSR matrix from its entries in row order (``rows``: each entry's row, ``row_starts``: the CSR row
    pointers), and its transpose."""
    n_rows, n_cols = shape
    # narrow keys sort 3x faster; stable, so each column's entries stay in row order
    key = cols.short() if n_cols <= torch.iinfo(torch.int16).max else cols
    order = torch.argsort(key, stable=True)
    # int32 indices: 8 bytes an entry with its weight instead of 12, and both products run about 25% faster
    matrix = torch.sparse_csr_tensor(row_starts.int(), cols.int(), weights, shape, check_invariants=False)
    rows_t, weights_t = rows.index_select(0, order).int(), weights.index_select(0, order)
    matrix_t = torch.sparse_csr_tensor(csr_starts(cols, n_cols).int(), rows_t, weights_t, (n_cols, n_rows), check_invariants=False)
    return matrix, matrix_t


class _SparsePool(torch.autograd.Function):
    """``matrix @ weight`` for a constant sparse ``matrix``; the backward multiplies by ``matrix_t`` (the
    transpose, built by the reader), so that neither direction transposes or sorts anything in the step."""

    @staticmethod
    def forward(ctx: Any, matrix: torch.Tensor, matrix_t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        return matrix @ weight

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.matrix_t @ grad


class EmbeddingArch(nn.Module):
    """Every embedded feature, the user, item and owner ids, the token lists and the bags, from one
    table-batched weight (all tables stacked, as FBGEMM's table-batched embeddings hold them) by one sparse
    product: [B, F, D], features in the order ``self.features`` (the ids, the lists outside bags by name,
    then the bags by name).

    One product and one optimizer tensor for all tables: adding a table or a list adds its ids to the
    product and nothing per step beyond that. The product is a custom autograd function whose backward
    multiplies the transposed pooling matrix, built by the reader too, by the gradient. It computes what
    ``nn.Embedding`` per id feature and one ``embedding_bag`` per list compute, a bag the sum of its lists'
    (tested; lists without weights are averaged, weighted ones summed); ``mmfeat bench ranker`` times them
    side by side.
    """

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.bags = {b: tuple(cfg.bags[b]) for b in sorted(cfg.bags)}
        in_bags = [n for members in self.bags.values() for n in members]
        if set(in_bags) - set(cfg.lists) or len(in_bags) != len(set(in_bags)) or not all(self.bags.values()):
            raise ValueError(f"bags {dict(cfg.bags)}: each of the ranker's lists in at most one bag, and no bag empty")
        self.lists = sorted(set(cfg.lists) - set(in_bags))
        self.features = (*ID_FEATURES, *self.lists, *self.bags)
        self.table_of = {n: n for n in ID_FEATURES} | {n: cfg.shared.get(n, n) for n in cfg.lists}
        sizes = {"user": cfg.n_users, "item": cfg.n_items, "owner": cfg.n_owners}
        for n in sorted(cfg.lists):
            if self.table_of[n] in ID_FEATURES:
                raise ValueError(f"list {n!r}: table name {self.table_of[n]!r} is an id feature's")
            sizes[self.table_of[n]] = max(sizes.get(self.table_of[n], 0), cfg.lists[n])
        starts = itertools.accumulate(sizes.values(), initial=0)
        self.rows = {t: (start, size) for (t, size), start in zip(sizes.items(), starts, strict=False)}
        self.weight = nn.Parameter(torch.randn(sum(sizes.values()), cfg.dim))  # N(0, 1), nn.Embedding's init
        self.weighted = cfg.weighted

    def table(self, name: str) -> torch.Tensor:
        """One table's rows of the weight (a view)."""
        start, size = self.rows[name]
        return self.weight[start : start + size]

    @torch.no_grad()
    def prepare(self, ids: Mapping[str, torch.Tensor], lists: Mapping[str, IdList]) -> Layout:
        """The batch laid out for pooling. Each entry is written straight to its place in row order (rows are
        example-major, so the product's output is [B, F, D] without regrouping); only the transpose sorts."""
        batch, n_features = len(ids["user"]), len(self.features)
        examples = torch.arange(batch)
        # each list feature's entries, grouped by example: (example, column, weight)
        entries = [self._entries(n, lists[n], batch) for n in self.lists]
        for members in self.bags.values():
            example, cols, weights = (torch.cat(p) for p in zip(*(self._entries(n, lists[n], batch) for n in members), strict=True))
            entries.append(self._merged(members, batch, example, cols, weights))
        counts = torch.ones(batch, n_features, dtype=torch.long)
        for k, (example, _, _) in enumerate(entries, start=len(ID_FEATURES)):
            counts[:, k] = torch.bincount(example, minlength=batch)
        row_starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.view(-1).cumsum(0)])
        nnz = int(row_starts[-1])
        cols, weights = torch.empty(nnz, dtype=torch.long), torch.empty(nnz)
        for k, name in enumerate(ID_FEATURES):
            at = row_starts[examples * n_features + k]
            cols[at], weights[at] = ids[name] + self.rows[name][0], 1.0
        for k, (example, cols_k, weights_k) in enumerate(entries, start=len(ID_FEATURES)):
            first = counts[:, k].cumsum(0) - counts[:, k]  # each example's first entry among this feature's
            at = row_starts[example * n_features + k] + torch.arange(len(example)) - first[example]
            cols[at], weights[at] = cols_k, weights_k
        rows = torch.repeat_interleave(torch.arange(batch * n_features), counts.view(-1))
        matrix, matrix_t = csr_pair(row_starts, rows, cols, weights, (batch * n_features, len(self.weight)))
        return Layout(matrix, matrix_t, batch, n_features)

    def _entries(self, name: str, ids: IdList, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """List ``name``'s entries: each one's example, column in the weight, and weight (its own, or 1/length
        for an unweighted list: the mean)."""
        lengths = torch.diff(ids.offsets, append=torch.tensor([len(ids.values)]))
        example = torch.repeat_interleave(torch.arange(batch), lengths)
        cols = ids.values + self.rows[self.table_of[name]][0]
        if name in self.weighted and ids.weights is not None:
            return example, cols, ids.weights.float()
        return example, cols, (1.0 / lengths.clamp(min=1).float())[example]

    def _merged(
        self, members: Sequence[str], batch: int, example: torch.Tensor, cols: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A bag's entries with each id entered once per example, its weights in the bag's lists added: sorted by
        example, then column. Its lists may hold ids of different tables (semantic-ID codes and prefixes): the
        keys then span the rows from the first of its tables to the end of the last."""
        spans = [self.rows[self.table_of[n]] for n in members]
        first = min(start for start, _ in spans)
        size = max(start + n for start, n in spans) - first
        keys = example * size + cols - first
        n_keys = batch * size
        if n_keys <= DENSE_BAG_KEYS:  # a count per possible key: about twice as fast as sorting the keys
            present = torch.bincount(keys, minlength=n_keys).nonzero().squeeze(1)
            summed = torch.bincount(keys, weights=weights, minlength=n_keys)[present].float()
        else:  # a vocabulary too large to count per key (a hashed one)
            present, where = torch.unique(keys, return_inverse=True)
            summed = torch.zeros(len(present)).index_add_(0, where, weights)
        return present // size, present % size + first, summed

    def forward(self, layout: Layout) -> torch.Tensor:
        return _SparsePool.apply(layout.matrix, layout.matrix_t, self.weight).view(layout.batch, layout.features, -1)


class DenseArch(nn.Module):
    """Dense features and the (frozen, precomputed) visual embedding: [B, dense + V] -> [B, D]."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.net = mlp([cfg.dense_dim + cfg.visual_dim, *cfg.dense_hidden, cfg.dim])

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.net(dense)


class _PairDots(torch.autograd.Function):
    """The upper triangle of each example's Gram matrix: [B, F, D] -> [B, P], P = F(F-1)/2 (``upper``: the
    pairs' positions in the flattened [F*F]). The backward is one batched product of the vectors with the
    symmetric [F, F] gradient, which ``spread`` ([P, F*F], a 1 at each pair's two positions) builds in one
    small matrix product; autograd through ``bmm(x, x^T)`` would take two batched products and add them."""

    @staticmethod
    def forward(ctx: Any, vectors: torch.Tensor, upper: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(vectors, spread)
        return torch.bmm(vectors, vectors.transpose(1, 2)).flatten(1).index_select(1, upper)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        vectors, spread = ctx.saved_tensors
        b, f, _ = vectors.shape
        return torch.bmm((grad @ spread.to(grad.dtype)).view(b, f, f), vectors), None, None


class InteractionArch(nn.Module):
    """Pairwise dot products of the feature vectors (upper triangle), concatenated with the dense vector."""

    def __init__(self, n_vectors: int) -> None:
        super().__init__()
        self.upper: torch.Tensor
        self.spread: torch.Tensor
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=1)
        self.register_buffer("upper", rows * n_vectors + cols, persistent=False)
        spread = torch.zeros(len(rows), n_vectors * n_vectors)
        pairs = torch.arange(len(rows))
        spread[pairs, rows * n_vectors + cols] = spread[pairs, cols * n_vectors + rows] = 1.0
        self.register_buffer("spread", spread, persistent=False)

    def forward(self, dense: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """``embedded``: [B, F, D]; the dense vector [B, D] joins it as the first vector."""
        vectors = torch.cat([dense.unsqueeze(1), embedded], dim=1)
        return torch.cat([dense, _PairDots.apply(vectors, self.upper, self.spread)], dim=1)


class TaskHeads(nn.Module):
    def __init__(self, width: int, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.heads = nn.Linear(width, len(tasks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(x)


class DLRMRanker(nn.Module):
    """Multi-task DLRM: logits [B, T] for the configured tasks."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = EmbeddingArch(cfg)
        self.dense = DenseArch(cfg)
        n_vectors = 1 + len(self.embeddings.features)
        self.interaction = InteractionArch(n_vectors)
        width = cfg.dim + n_vectors * (n_vectors - 1) // 2
        self.over = mlp([width, *cfg.over])
        self.heads = TaskHeads(cfg.over[-1], cfg.tasks)

    def forward(self, layout: Layout, dense: torch.Tensor) -> torch.Tensor:
        """``layout``: ``self.embeddings.prepare(ids, lists)``."""
        return self.heads(self.over(self.interaction(self.dense(dense), self.embeddings(layout))))


class MultiTaskLoss(nn.Module):
    """Mean binary cross-entropy over tasks; labels [B, T] in {0, 1}."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, labels)
