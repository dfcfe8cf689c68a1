"""Proofs on transformers written the common ways (issue 28): nanoGPT (arange positions, a mask made in forward),
LLaMA (nn.RMSNorm, SwiGLU; or written-out RMSNorm with rotary positions and causal SDPA), PyTorch's default
``batch_first=False`` layers, a ViT-style cls token with ``einsum('...')``, as ``tests/test_user_transformers.py``
writes them, at d_model 16, 4 heads, on modular addition mod ``p``.

For each: two seeds trained with Adam (full batch), the straight segment between them proven below 1.1× and 1.01×
its peak over 100,001 float64 points (pieces, seconds, the bound against that peak), then ``landscape.connect`` at
its default level and at ``--level`` with ``--proof-seconds`` (what backs the answer: a proof, or the grid).

    python benchmarks/user_transformer_proofs.py [--p 7] [--steps 1000] [--level 0.1] [--proof-seconds 60]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch
import torch.nn.functional as F

import landscape
from landscape.paths.proof import prove_below

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
import test_proof_attention as tpa  # noqa: E402
import test_user_transformers as tut  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--p", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--level", type=float, default=0.1)
    parser.add_argument("--proof-seconds", type=float, default=60.0)
    args = parser.parse_args()
    torch.backends.mha.set_fastpath_enabled(False)  # torch's fused attention kernel has no derivative
    tut.P = args.p  # the models read the number of classes when built
    x, y = tpa.modadd(args.p)
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    makers = {"nanoGPT": lambda: tut.GPT(16, 4), "LLaMA": lambda: tut.Llama(16, 4),
              "LLaMA written, rotary": lambda: tut.Llama(16, 4, hand=True),
              "batch_first=False": lambda: tut.SeqFirst(16, 4), "ViT cls + einsum": lambda: tut.ViT(16, 4)}
    for name, make in makers.items():
        nets = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            net = make()
            opt = torch.optim.Adam(net.parameters(), lr=0.01)
            for _ in range(args.steps):
                opt.zero_grad()
                F.cross_entropy(net(x), y).backward()
                opt.step()
            nets.append(net.eval())
        problem = landscape.from_module(nets[0], (x, y), "cross_entropy")
        a, b = (torch.nn.utils.parameters_to_vector(n.parameters()).double().detach() for n in nets)
        peak = float(tpa.dense_loss(nets[0], a + t[:, None] * (b - a), x, y).max())
        print(f"{name}: D = {a.numel()}, losses {float(problem.loss(a)):.4f} {float(problem.loss(b)):.4f}, "
              f"straight peak {peak:.4f}; bounds: {problem.bounds_unavailable() or 'available'}", flush=True)
        for factor in (1.1, 1.01):
            wall, cpu = time.time(), time.process_time()
            proof = prove_below(problem, torch.stack([a, b]), peak * factor, budget=200_000)
            print(f"  straight, {factor}x peak: {proof.status}, {proof.pieces} pieces, {time.time() - wall:.1f} s "
                  f"({time.process_time() - cpu:.1f} CPU s), bound {proof.bound:.4f}", flush=True)
        for level in (None, args.level):
            wall = time.time()
            path = landscape.connect(problem, a, b, level=level, generator=torch.Generator().manual_seed(0),
                                     proof_seconds=args.proof_seconds)
            proof = path.info.get("proof", {})
            print(f"  connect at {path.level:.4g}: {path.status}, max {path.dense_max_loss:.4f}, certificate "
                  f"{path.certificate} (bound {path.bound}), proof {proof.get('status')} in {proof.get('pieces')} "
                  f"pieces, {time.time() - wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
