"""`mmfeat bench ranker`: the ranker's training throughput with vs without the MM-LLM features, side by
side, for over-arches of growing size.

The content features add work per example: the pooling product, a wider interaction, and so a wider input
to the over-arch's first layer (22 -> 44 numbers with all content features: caption tokens A, semantic-ID codes
and prefixes, the profile bag of five lists), and a wider dense arch (the content embedding). The ratio depends
on how much the rest of the step costs. The eval ranker is small (a 64-32 over-arch); production rankers
are far wider. Each shape is measured with ``ranking.train.step_throughput``, the function `mmfeat eval`
reports from.

It also times the embedding layer alone, forward and backward, for the eval's batches of the full variant,
four ways side by side: the ranker's one table-batched sparse product, one table-batched
``embedding_bag`` call, and what the ranker did before (an ``nn.Embedding`` per id feature and a sparse
product for the token table), and TorchRec's ``EmbeddingBagCollection`` on a ``KeyedJaggedTensor`` (torchrec 1.9.2
with fbgemm-gpu-nightly-cpu 2026.10.16: fbgemm-gpu-cpu 1.9.0 does not load with torch 2.15, an undefined
``c10::report_overflow``); and the same with the token ids hashed into a 2^18 vocabulary. Every method's output
is checked against the ranker's before it is timed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmfeat.settings import load_settings
from ranking.dataset import Dataset
from ranking.evaluate import QUICK, VARIANTS, world_dataset
from ranking.model import ID_FEATURES, EmbeddingArch, Layout, RankerConfig, _SparsePool, csr_pair, csr_starts
from ranking.train import make_batch, model_config, step_throughput
from ranking.world import WorldConfig

OVER_ARCHES: tuple[tuple[int, ...], ...] = (tuple(RankerConfig.over), (256, 128), (512, 256, 128), (1024, 512, 256))
BATCH = 512
HASHED_VOCAB = 1 << 18


def bench_ranker(quick: bool, out_dir: Path) -> dict[str, Any]:
    cfg = QUICK if quick else WorldConfig()
    ds = world_dataset(cfg, load_settings())
    rows = np.arange(len(ds) * 7 // 8)
    base, full = VARIANTS[0], VARIANTS[-1]
    shapes = OVER_ARCHES[:2] if quick else OVER_ARCHES
    sizes = {"steps": 5, "rounds": 2} if quick else {}
    points = []
    for over in tqdm(shapes, desc="over-arches", file=sys.stderr):
        # the baseline, item tokens A and all content features: the bench's question is what the features cost
        r = step_throughput(ds, rows, [base, VARIANTS[1], full], seed=0, batch=BATCH, overrides={"over": over}, **sizes)
        without, with_ = r[base.name]["step"], r[full.name]["step"]
        points.append({
            "over": list(over), "examples_per_s": {name: m["step"] for name, m in r.items()},
            "examples_per_s_prepare_and_step": {name: m["prepare_and_step"] for name, m in r.items()},
            "step_ms_without": 1e3 * BATCH / without, "step_ms_with": 1e3 * BATCH / with_,
            "extra_us_per_example": 1e6 * (1 / with_ - 1 / without), "ratio": r[full.name]["step_ratio"],
            "ratio_item_tokens_a": r[VARIANTS[1].name]["step_ratio"],
        })  # fmt: skip
        print(f"over-arch {'-'.join(map(str, over)):>13}: {points[-1]['step_ms_without']:.2f} ms/step without, "
              f"{points[-1]['step_ms_with']:.2f} with the MM-LLM features, ratio {points[-1]['ratio']:.2f}", file=sys.stderr)  # fmt: skip
    embedding = embedding_costs(ds, rows, **({"batches": 5, "rounds": 2} if quick else {}))
    for vocab, by_method in embedding.items():
        print(f"embedding, vocabulary {vocab}: " + ", ".join(f"{m} {ms:.3f} ms" for m, ms in by_method.items()), file=sys.stderr)
    plot(points, out_dir / "bench_ranker.png")
    return {
        "world": {"users": cfg.users, "items": cfg.items, "impressions": cfg.impressions}, "batch": BATCH,
        "with": full.name, "without": base.name, "method": "model step (forward, backward, fused Adam), fresh models on the "
        "same pre-assembled batches, the variants taking turns step by step; rates: median over rounds; ratios: median of "
        "the per-round ratios (ranking.train.step_throughput)", "points": points,
        "embedding_ms": embedding, "embedding_method": "the full variant's embedded features of one batch (three ids, the item "
        "tokens, the profile bag of five lists), forward and backward, ms per batch: distinct batches in alternating rounds, median",
    }  # fmt: skip


def embedding_costs(ds: Dataset, rows: np.ndarray, batches: int = 30, rounds: int = 7) -> dict[str, dict[str, float]]:
    """ms per batch to embed the full variant's features (three ids, the item tokens, the profile bag) of one
    batch, forward and backward, by three methods side by side, all starting from the same table values; for the dataset's
    vocabulary and for the same token ids hashed into HASHED_VOCAB rows."""
    full = VARIANTS[-1]
    rng = np.random.default_rng(0)
    cfg = model_config(ds, full)
    vocab = max(cfg.lists.values())
    raw = [make_batch(ds, rng.choice(rows, BATCH, replace=False), full)[:2] for _ in range(batches)]
    out: dict[str, dict[str, float]] = {}
    for size in (vocab, HASHED_VOCAB):
        hashed = torch.from_numpy(rng.choice(HASHED_VOCAB, vocab, replace=False)) if size != vocab else torch.arange(vocab)
        arch = EmbeddingArch(replace(cfg, lists=dict.fromkeys(cfg.lists, size)))
        before = SeparateTables(arch)
        ranker, bag, earlier = (
            "one table-batched sparse product (the ranker)", "one table-batched embedding_bag",
            "a lookup per id table + a sparse product for the token table (the ranker before)",
        )  # fmt: skip
        methods: dict[str, list[Callable[[], torch.Tensor]]] = {ranker: [], bag: [], earlier: []}
        for ids, lists in raw:
            layout = arch.prepare(ids, {n: replace(ids_n, values=hashed[ids_n.values]) for n, ids_n in lists.items()})
            methods[ranker].append(partial(arch, layout))
            methods[bag].append(partial(_bag_all, arch, layout))
            methods[earlier].append(partial(before, ids, before.lists_only(layout)))
        params = [arch.weight, *before.parameters()]
        rec = TorchRecBags.of(arch)
        if rec is not None:
            kjts = [rec.kjt(ids, {n: replace(ids_n, values=hashed[ids_n.values]) for n, ids_n in lists.items()}) for ids, lists in raw]
            methods[TORCHREC] = [partial(rec, kjt) for kjt in kjts]
            params += list(rec.parameters())
        first = {name: calls[0]().detach() for name, calls in methods.items()}
        for name, embedded in first.items():
            if not torch.allclose(first[ranker], embedded, atol=1e-5):
                raise AssertionError(f"embedding by {name} differs from the ranker's")
        out[str(size)] = time_side_by_side(methods, rounds, params)
    return out


TORCHREC = "torchrec EmbeddingBagCollection on a KeyedJaggedTensor"


def torchrec_versions() -> dict[str, str] | None:
    """torchrec's and fbgemm's versions when both import (with this torch), else None."""
    try:
        from importlib.metadata import version

        import fbgemm_gpu  # noqa: F401  # its operators load against this torch, or raise
        import torchrec  # noqa: F401
    except (ImportError, OSError):
        return None
    fbgemm = next((d for d in ("fbgemm-gpu-cpu", "fbgemm-gpu-nightly-cpu", "fbgemm-gpu") if _installed(d)), "fbgemm-gpu")
    return {"torch": torch.__version__, "torchrec": version("torchrec"), fbgemm: version(fbgemm)}


def _installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(dist)
    except PackageNotFoundError:
        return False
    return True


class TorchRecBags(torch.nn.Module):
    """The ranker's embedded features through TorchRec: one weighted ``EmbeddingBagCollection`` (SUM pooling) with
    a table per ranker table and a feature per id feature and list, fed a ``KeyedJaggedTensor`` whose per-entry
    weights are the ranker's (1 for an id, 1/length for an unweighted list: the mean, the profile weights); a
    bag is the sum of its lists' pooled vectors, which equals pooling them merged. Its tables start as copies of
    ``arch``'s, so its output equals the ranker's."""

    def __init__(self, arch: EmbeddingArch) -> None:
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType

        super().__init__()
        self.arch = arch
        self.inputs = [*ID_FEATURES, *arch.lists, *(n for members in arch.bags.values() for n in members)]
        by_table: dict[str, list[str]] = {}
        for name in self.inputs:
            by_table.setdefault(arch.table_of[name], []).append(name)
        tables = [
            EmbeddingBagConfig(name=t, embedding_dim=arch.weight.shape[1], num_embeddings=arch.rows[t][1], feature_names=features,
                               pooling=PoolingType.SUM)
            for t, features in by_table.items()
        ]  # fmt: skip
        self.ebc = EmbeddingBagCollection(tables=tables, is_weighted=True)
        with torch.no_grad():
            for t in by_table:
                self.ebc.embedding_bags[t].weight.copy_(arch.table(t))

    @classmethod
    def of(cls, arch: EmbeddingArch) -> TorchRecBags | None:
        return cls(arch) if torchrec_versions() is not None else None

    def kjt(self, ids: dict[str, torch.Tensor], lists: dict[str, Any]) -> Any:
        """The batch as a KeyedJaggedTensor (a batch reader's job, as ``EmbeddingArch.prepare`` is)."""
        from torchrec import KeyedJaggedTensor

        values, lengths, weights = [], [], []
        for name in self.inputs:
            if name in ID_FEATURES:
                values.append(ids[name])
                lengths.append(torch.ones(len(ids[name]), dtype=torch.long))
                weights.append(torch.ones(len(ids[name])))
                continue
            il = lists[name]
            n = torch.diff(il.offsets, append=torch.tensor([len(il.values)]))
            values.append(il.values)
            lengths.append(n)
            w = il.weights if name in self.arch.weighted and il.weights is not None else (1.0 / n.clamp(min=1).float()).repeat_interleave(n)
            weights.append(w.float())
        return KeyedJaggedTensor(keys=self.inputs, values=torch.cat(values), lengths=torch.cat(lengths), weights=torch.cat(weights))

    def forward(self, kjt: Any) -> torch.Tensor:
        pooled = self.ebc(kjt).to_dict()
        vectors = [pooled[n] for n in (*ID_FEATURES, *self.arch.lists)]
        vectors += [torch.stack([pooled[n] for n in members]).sum(0) for members in self.arch.bags.values()]
        return torch.stack(vectors, dim=1)


def _bag_all(arch: EmbeddingArch, layout: Layout) -> torch.Tensor:
    """The layout's bags by one embedding_bag call: [B, F, D]."""
    m = layout.matrix
    ids, offsets = m.col_indices().long(), m.crow_indices()[:-1].long()
    bags = torch.nn.functional.embedding_bag(ids, arch.weight, offsets, mode="sum", per_sample_weights=m.values())
    return bags.view(layout.batch, layout.features, -1)


class SeparateTables(torch.nn.Module):
    """What the ranker had before its embeddings were table-batched: one nn.Embedding per id feature, and the
    token rows (one table in the full variant) as a table of their own, pooled by its own sparse product. A
    copy of ``arch``'s values, so that its output equals ``arch``'s."""

    def __init__(self, arch: EmbeddingArch) -> None:
        super().__init__()
        copy = {n: arch.table(n).detach().clone() for n in ID_FEATURES}
        self.ids = torch.nn.ModuleDict({n: torch.nn.Embedding.from_pretrained(copy[n], freeze=False) for n in ID_FEATURES})
        self.first_token_row = sum(arch.rows[n][1] for n in ID_FEATURES)
        self.tokens = torch.nn.Parameter(arch.weight.detach()[self.first_token_row :].clone())

    def lists_only(self, layout: Layout) -> Layout:
        """The layout's token-list rows alone, over the token table's rows: [B*L, V] and its transpose."""
        m, n_ids = layout.matrix, len(ID_FEATURES)
        crow, cols, weights = m.crow_indices().long(), m.col_indices().long(), m.values()
        rows = torch.repeat_interleave(torch.arange(len(crow) - 1), torch.diff(crow))
        keep = rows % layout.features >= n_ids
        n_lists = layout.features - n_ids
        new_rows = (rows[keep] // layout.features) * n_lists + rows[keep] % layout.features - n_ids
        n_rows = layout.batch * n_lists
        matrix, matrix_t = csr_pair(
            csr_starts(new_rows, n_rows), new_rows, cols[keep] - self.first_token_row, weights[keep], (n_rows, len(self.tokens))
        )
        return Layout(matrix, matrix_t, layout.batch, n_lists)

    def forward(self, ids: dict[str, torch.Tensor], lists: Layout) -> torch.Tensor:
        looked_up = torch.stack([self.ids[n](ids[n]) for n in ID_FEATURES], dim=1)
        pooled = _SparsePool.apply(lists.matrix, lists.matrix_t, self.tokens).view(lists.batch, lists.features, -1)
        return torch.cat([looked_up, pooled], dim=1)


def time_side_by_side(
    methods: dict[str, list[Callable[[], torch.Tensor]]], rounds: int, params: Sequence[torch.Tensor]
) -> dict[str, float]:
    """Median ms per call of each method's calls (forward, then backward of the sum), in alternating rounds;
    ``params``' gradients are dropped after each call."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(rounds + 1):
        for name, calls in methods.items():
            t0 = time.perf_counter()
            for call in calls:
                call().sum().backward()
                for p in params:
                    p.grad = None
            if r:  # round 0 warms up
                times[name].append(1e3 * (time.perf_counter() - t0) / len(calls))
    return {name: float(np.median(ts)) for name, ts in times.items()}


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["-".join(map(str, p["over"])) for p in points]
    x = np.arange(len(points))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].bar(x - 0.2, [p["step_ms_without"] for p in points], 0.4, label="without MM-LLM features", color="#8c8c8c")
    axes[0].bar(x + 0.2, [p["step_ms_with"] for p in points], 0.4, label="all content features", color="#dd8452")
    axes[0].set_ylabel(f"ms per step (batch {BATCH})")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [p["ratio"] for p in points], "o-", color="#4c72b0", label="all content features")
    axes[1].plot(x, [p["ratio_item_tokens_a"] for p in points], "s--", color="#55a868", label="item tokens A")
    axes[1].axhline(0.9, color="#c44e52", lw=0.8, ls=":", label="goal 0.9")
    axes[1].set_ylabel("training throughput ratio")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel("over-arch widths")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
