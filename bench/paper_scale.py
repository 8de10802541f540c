"""The captioner at the paper's scale, for a machine with an NVIDIA GPU: a ~1.5B-parameter LLaMA
decoder behind the same encoder and Q-Former, random weights, fixed caption length, served by the
same triton_models/captioner (instance on the GPU), dynamic batching vs batch-1.

    python -m bench.paper_scale                 # on a GPU machine: writes results/bench_captioner_paper_scale.json
    python -m bench.paper_scale --tiny --cpu    # the same code path, small, on this CPU (a smoke run)

Throughput only: the weights are random, so the captions mean nothing; the length is fixed so
both modes generate the same number of tokens.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import torch

from bench.run import bench_captioner, write_result
from captioner.configuration import LiteConfig
from captioner.modeling.lite import LiteCaptioner, save_model_dir
from captioner.processing import WordVocab
from captioner.training.train import caption_words
from mmfeat.settings import PROJECT_ROOT

# LLaMA-2 shapes at ~1.4B parameters: 28 layers of width 2048 (16 heads), MLP 5632; BLIP-2's Q-Former width.
PAPER = LiteConfig(hidden=768, qformer_layers=6, llm_hidden=2048, llm_intermediate=5632, llm_layers=28, heads=16, queries=32,
                   max_new_tokens=24, min_new_tokens=24, finetune_tail=0)  # fmt: skip
TINY = LiteConfig(
    hidden=64, qformer_layers=1, llm_hidden=128, llm_layers=2, heads=4, queries=8, max_new_tokens=8, min_new_tokens=8, finetune_tail=0
)


def gpu_name() -> str:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "none"


def build(config: LiteConfig, out: Path) -> int:
    torch.manual_seed(0)
    vocab = WordVocab(caption_words(["dog", "cat"]))
    model = LiteCaptioner(config, len(vocab.words))
    decoder_params = sum(p.numel() for p in model.llm.parameters())
    save_model_dir(model, vocab, out, name="paper-scale-random", trained=False, extra={"decoder_parameters": decoder_params})
    return decoder_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small dimensions (a smoke run of the same path)")
    ap.add_argument("--cpu", action="store_true", help="serve on the CPU instead of GPU 0")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mmfeat-paper-scale-"))
    params = build(TINY if args.tiny else PAPER, tmp / "model")
    kind = "KIND_CPU" if args.cpu else "KIND_GPU"
    figures = bench_captioner(tmp / "model", args.concurrency, args.duration, instance_kind=kind)
    figures |= {"decoder_parameters": params, "gpu": gpu_name(), "instance_kind": kind, "tiny": args.tiny}
    name = "captioner_paper_scale" + ("_tiny" if args.tiny else "")
    print(write_result(PROJECT_ROOT / "results", name, figures))


if __name__ == "__main__":
    main()
