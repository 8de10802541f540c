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
    """Token-ID-list features through EmbeddingBag with offsets: L lists -> [B, L, D]."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        self.names = sorted(cfg.lists)
        self.table_of = {n: cfg.shared.get(n, n) for n in self.names}
        sizes: dict[str, int] = {}
        for n in self.names:
            sizes[self.table_of[n]] = max(sizes.get(self.table_of[n], 0), cfg.lists[n])
        self.tables = nn.ModuleDict({t: nn.Embedding(size, cfg.dim) for t, size in sizes.items()})
        self.weighted = cfg.weighted

    def forward(self, lists: Mapping[str, IdList]) -> torch.Tensor:
        """One embedding_bag call per table for all its lists (mean lists become weights 1/length)."""
        out: dict[str, torch.Tensor] = {}
        for table_name in sorted(set(self.table_of.values())):
            names = [n for n in self.names if self.table_of[n] == table_name]
            values, offsets, weights = [], [], []
            base = 0
            for n in names:
                ids = lists[n]
                count = len(ids.values)
                lengths = torch.diff(ids.offsets, append=torch.tensor([count]))
                if n in self.weighted and ids.weights is not None:
                    w = ids.weights
                else:
                    w = torch.repeat_interleave(1.0 / lengths.clamp(min=1).float(), lengths)
                values.append(ids.values)
                offsets.append(ids.offsets + base)
                weights.append(w)
                base += count
            table = self.tables[table_name]
            assert isinstance(table, nn.Embedding)
            bags = nn.functional.embedding_bag(
                torch.cat(values), table.weight, torch.cat(offsets), mode="sum", per_sample_weights=torch.cat(weights)
            )
            for k, chunk in enumerate(bags.chunk(len(names))):
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
