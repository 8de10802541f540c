"""A DLRM-style multi-task ranker built from small named modules (after torchrec's models/dlrm.py).

Shapes (B = batch, D = embedding dim, F = number of embedded features):

    ids        {user, item, owner}: LongTensor [B]            -> SparseArch        -> [B, 3, D]
    lists      name -> IdList (values [N], offsets [B],       -> TokenListArch     -> [B, L, D]
               optional weights [N])
    dense      FloatTensor [B, dense_dim] (+ visual [B, V])   -> DenseArch         -> [B, D]
    interaction: pairwise dot products of the F = 3 + L + 1 vectors (upper triangle) ++ dense -> [B, F(F-1)/2 + D]
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

# torch flags every sparse CSR tensor as beta; the two products used here are tested against embedding_bag
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

ID_FEATURES = ("user", "item", "owner")


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
    tasks: Sequence[str] = ("like", "comment", "share", "time_spent", "consumption")
    dim: int = 16
    dense_hidden: Sequence[int] = (32,)
    over: Sequence[int] = (64, 32)


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class SparseArch(nn.Module):
    """Sparse ID embeddings: [B] ids per feature -> [B, 3, D]."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        sizes = {"user": cfg.n_users, "item": cfg.n_items, "owner": cfg.n_owners}
        self.tables = nn.ModuleDict({k: nn.Embedding(sizes[k], cfg.dim) for k in ID_FEATURES})

    def forward(self, ids: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.tables[k](ids[k]) for k in ID_FEATURES], dim=1)


@dataclass
class TableBags:
    """The lists of one embedding table in a batch, laid out for pooling: the [L*B, V] pooling matrix (one row
    per list and example, the weight of each id in it) as a sparse CSR tensor, and its transpose, which the
    backward pass multiplies by. Built from the inputs alone (no parameters), so a batch reader can build it
    ahead of the model step."""

    lists: tuple[str, ...]
    matrix: torch.Tensor  # [L*B, V] sparse CSR
    matrix_t: torch.Tensor  # [V, L*B] sparse CSR


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


class TokenListArch(nn.Module):
    """Token-ID-list features pooled per example: L lists -> [B, L, D], one pooling per embedding table.

    Pooling is one product of a sparse [L*B, V] pooling matrix with the table (a custom autograd function;
    the backward multiplies the transposed matrix, which the reader builds too, by the gradient). For the
    eval's batches (about 14 ids per list out of 128) it costs 0.6 of a dense pooling matrix, which
    multiplies mostly zeros, and a seventh of ``embedding_bag``, whose backward sorts every id; with a
    hashed vocabulary it is about as fast as ``embedding_bag`` (`mmfeat bench ranker`). It computes the
    same sums as one ``embedding_bag`` per list (tested). ``prepare`` lays a batch's lists out; the model
    step takes its output, or the lists, which it then prepares itself.
    """

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.names = sorted(cfg.lists)
        self.table_of = {n: cfg.shared.get(n, n) for n in self.names}
        sizes: dict[str, int] = {}
        for n in self.names:
            sizes[self.table_of[n]] = max(sizes.get(self.table_of[n], 0), cfg.lists[n])
        self.tables = nn.ModuleDict({t: nn.Embedding(size, cfg.dim) for t, size in sizes.items()})
        self.groups = [(t, [n for n in self.names if self.table_of[n] == t]) for t in sorted(sizes)]
        self.weighted = cfg.weighted

    def _pool_inputs(self, lists: Mapping[str, IdList], names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """All lists of one table as (ids, bag index in [0, L*B), weight per id); mean lists weigh 1/length."""
        batch = len(lists[names[0]].offsets)
        values, bags, weights = [], [], []
        for k, n in enumerate(names):
            ids = lists[n]
            lengths = torch.diff(ids.offsets, append=torch.tensor([len(ids.values)]))
            bag = torch.repeat_interleave(torch.arange(k * batch, (k + 1) * batch), lengths)
            w = ids.weights if n in self.weighted and ids.weights is not None else (1.0 / lengths.clamp(min=1).float())[bag - k * batch]
            values.append(ids.values)
            bags.append(bag)
            weights.append(w)
        return torch.cat(values), torch.cat(bags), torch.cat(weights).float(), batch

    @torch.no_grad()
    def prepare(self, lists: Mapping[str, IdList]) -> dict[str, TableBags]:
        """The batch's lists per table, laid out for pooling."""
        out: dict[str, TableBags] = {}
        for table_name, names in self.groups:
            values, bags, weights, batch = self._pool_inputs(lists, names)
            table = self.tables[table_name]
            assert isinstance(table, nn.Embedding)
            n_bags, vocab = len(names) * batch, table.num_embeddings
            # bags are sorted, so (bags, values) is already row-major; the transpose orders ids by value, then bag
            key = values.short() if vocab <= torch.iinfo(torch.int16).max else values.int()  # narrow keys sort 3x faster
            order = torch.argsort(key, stable=True)
            # int32 indices: 8 bytes an entry with its weight instead of 12, and both products run about 25% faster
            matrix = torch.sparse_csr_tensor(_row_starts(bags, n_bags), values.int(), weights, (n_bags, vocab), check_invariants=False)
            rows_t, weights_t = bags.index_select(0, order).int(), weights.index_select(0, order)
            matrix_t = torch.sparse_csr_tensor(_row_starts(values, vocab), rows_t, weights_t, (vocab, n_bags), check_invariants=False)
            out[table_name] = TableBags(tuple(names), matrix, matrix_t)
        return out

    def forward(self, lists: Mapping[str, IdList] | Mapping[str, TableBags]) -> torch.Tensor:
        prepared = self.prepare(lists) if any(isinstance(v, IdList) for v in lists.values()) else lists  # type: ignore[arg-type]
        out: dict[str, torch.Tensor] = {}
        for table_name, bags in prepared.items():
            assert isinstance(bags, TableBags)
            pooled = _SparsePool.apply(bags.matrix, bags.matrix_t, self.tables[table_name].weight)
            if len(prepared) == 1 and list(bags.lists) == self.names:  # one table holds every list: no regrouping
                return pooled.view(len(bags.lists), -1, pooled.shape[-1]).transpose(0, 1)
            for k, chunk in enumerate(pooled.chunk(len(bags.lists))):
                out[bags.lists[k]] = chunk
        return torch.stack([out[n] for n in self.names], dim=1)


def _row_starts(rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """CSR row pointers ([n_rows + 1]: where each row's entries start) for entries ordered by row."""
    return torch.cat([torch.zeros(1, dtype=torch.int32), torch.bincount(rows, minlength=n_rows).cumsum(0).int()])


class DenseArch(nn.Module):
    """Dense features and the (frozen, precomputed) visual embedding: [B, dense + V] -> [B, D]."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.net = mlp([cfg.dense_dim + cfg.visual_dim, *cfg.dense_hidden, cfg.dim])

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.net(dense)


class InteractionArch(nn.Module):
    """Pairwise dot products of the F feature vectors (upper triangle), concatenated with the dense vector."""

    def __init__(self, n_vectors: int) -> None:
        super().__init__()
        self.upper: torch.Tensor
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=1)
        # positions of the upper triangle in the flattened [F*F] products: one index_select, whose backward (an
        # index_add) is cheaper than that of two-index advanced indexing (an accumulating index_put)
        self.register_buffer("upper", rows * n_vectors + cols, persistent=False)

    def forward(self, dense: torch.Tensor, vectors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``vectors``: [B, k, D] blocks of feature vectors, joined to the dense vector in this order."""
        allv = torch.cat([dense.unsqueeze(1), *vectors], dim=1)  # [B, F, D]
        dots = torch.bmm(allv, allv.transpose(1, 2))  # [B, F, F]
        return torch.cat([dense, dots.flatten(1).index_select(1, self.upper)], dim=1)


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
        self.sparse = SparseArch(cfg)
        self.lists = TokenListArch(cfg)
        self.dense = DenseArch(cfg)
        n_vectors = 1 + len(ID_FEATURES) + len(cfg.lists)
        self.interaction = InteractionArch(n_vectors)
        width = cfg.dim + n_vectors * (n_vectors - 1) // 2
        self.over = mlp([width, *cfg.over])
        self.heads = TaskHeads(cfg.over[-1], cfg.tasks)

    def forward(
        self, ids: Mapping[str, torch.Tensor], lists: Mapping[str, IdList] | Mapping[str, TableBags], dense: torch.Tensor
    ) -> torch.Tensor:
        """``lists``: the id lists by name, or ``self.lists.prepare(lists)``."""
        vectors = [self.sparse(ids), *([self.lists(lists)] if self.cfg.lists else [])]
        return self.heads(self.over(self.interaction(self.dense(dense), vectors)))


class MultiTaskLoss(nn.Module):
    """Mean binary cross-entropy over tasks; labels [B, T] in {0, 1}."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, labels)
