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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

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


class TokenListArch(nn.Module):
    """Token-ID-list features pooled per example: L lists -> [B, L, D], one pooling per embedding table.

    A table with a small vocabulary (our tokenizers: about 150 ids) pools by one product of a [L*B, V]
    pooling matrix with the table: on CPU its forward and backward cost a third of ``embedding_bag``'s,
    whose backward sorts every id. Larger vocabularies (the hash tokenizer) use ``embedding_bag``. Both
    compute the same sums (tested).
    """

    DENSE_POOL_MAX_VOCAB = 2048

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
        return torch.cat(values), torch.cat(bags), torch.cat(weights), batch

    def forward(self, lists: Mapping[str, IdList]) -> torch.Tensor:
        out: dict[str, torch.Tensor] = {}
        for table_name, names in self.groups:
            table = self.tables[table_name]
            assert isinstance(table, nn.Embedding)
            values, bags, weights, batch = self._pool_inputs(lists, names)
            n_bags, vocab = len(names) * batch, table.num_embeddings
            if vocab <= self.DENSE_POOL_MAX_VOCAB:
                pool = torch.zeros(n_bags * vocab).index_add_(0, bags * vocab + values, weights).view(n_bags, vocab)
                pooled = pool @ table.weight
            else:
                offsets = torch.searchsorted(bags, torch.arange(n_bags))  # bags are sorted: each bag's first id
                pooled = nn.functional.embedding_bag(values, table.weight, offsets, mode="sum", per_sample_weights=weights)
            for k, chunk in enumerate(pooled.chunk(len(names))):
                out[names[k]] = chunk
        return torch.stack([out[n] for n in self.names], dim=1)


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
        self.rows: torch.Tensor
        self.cols: torch.Tensor
        rows, cols = torch.triu_indices(n_vectors, n_vectors, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, dense: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        allv = torch.cat([dense.unsqueeze(1), vectors], dim=1)  # [B, F, D]
        dots = torch.bmm(allv, allv.transpose(1, 2))  # [B, F, F]
        return torch.cat([dense, dots[:, self.rows, self.cols]], dim=1)


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

    def forward(self, ids: Mapping[str, torch.Tensor], lists: Mapping[str, IdList], dense: torch.Tensor) -> torch.Tensor:
        vectors = self.sparse(ids)
        if self.cfg.lists:
            vectors = torch.cat([vectors, self.lists(lists)], dim=1)
        return self.heads(self.over(self.interaction(self.dense(dense), vectors)))


class MultiTaskLoss(nn.Module):
    """Mean binary cross-entropy over tasks; labels [B, T] in {0, 1}."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, labels)
