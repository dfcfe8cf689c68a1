"""Users' transformers that broke the derivation of their symmetry (:mod:`landscape.symmetries.user_transformer`).

Each was found by writing a transformer the way people do: outputs returned as a tuple or a dict (trained with a
loss of its own), a logit masked to -inf, RMSNorm computed in float32 as Hugging Face's LLaMA does
(``hidden_states.to(torch.float32)``), layers of the same width with other numbers of heads. Ground truths: the groups
of the same transformer written plainly (tests/test_user_transformer_symmetry.py), the module's own outputs in
float64 under random elements (to the rounding of float32 where the module computes in it), and a structure that
breaks a symmetry still losing its group.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_proof_attention import Heads, modadd
from test_user_transformer_symmetry import ATTN, EXPECTED
from test_user_transformers import GPT, P, Llama
from torch import nn

import landscape
from landscape.symmetries import orthogonal

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def leaves(problem, theta):
    """Every floating-point output of the module at θ on the training samples, float64, one vector."""
    module = copy.deepcopy(problem.module()).double()
    with torch.no_grad():
        for name, value in problem.layout.unflatten(theta.double()).items():
            module.get_parameter(name).copy_(value)
        out = module(problem.data("train")[0])
    return torch.cat([t.reshape(-1) for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)])


def groups(sym):
    return {g.name: (g.size, g.degree) for g in sym.groups}


def moved_copies(problem, sym, theta):
    perms, scales = sym.random(generator=torch.Generator().manual_seed(1), rescale=True)
    return [sym.transform(theta, perms, scales),
            sym.transform(theta, orthogonal.random_element(sym, generator=torch.Generator().manual_seed(2)))]


class TupleGPT(GPT):
    """nanoGPT returns ``(logits, loss)``; here ``(logits, an auxiliary output)`` or ``{"logits": ...}``."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, idx):
        logits = super().forward(idx)
        return (logits, logits.logsumexp(-1)) if self.kind == "tuple" else {"logits": logits}


def first_logits(out, y):
    return F.cross_entropy(out[0] if isinstance(out, tuple) else out["logits"], y)


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_outputs_in_a_tuple_or_a_dict_are_checked_every_one(kind):
    """Was a TypeError traceback (the check subtracted tuples); now the same groups as the plain model's, and
    elements keep every output."""
    torch.manual_seed(0)
    problem = landscape.from_module(TupleGPT(kind).eval(), modadd(), first_logits)
    sym = landscape.symmetry(problem)
    expected, attention, _ = EXPECTED["gpt-arange-positions"]
    assert groups(sym) == dict(expected, **{f"{a}.attn.{k}": v for a in attention for k, v in ATTN.items()})
    theta = torch.randn(problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 2
    for moved in moved_copies(problem, sym, theta):
        torch.testing.assert_close(leaves(problem, moved), leaves(problem, theta), rtol=1e-10, atol=1e-10)


class MaskedGPT(GPT):
    """A class no input may take, its logit masked to -inf (finite cross-entropy: no target is that class)."""

    def forward(self, idx):
        logits = super().forward(idx)
        return torch.cat([logits, torch.full_like(logits[:, :1], float("-inf"))], 1)


def test_an_infinite_output_does_not_hide_the_symmetry():
    """Was "found no symmetry ... every unit is pinned": the check required finite outputs, so every group failed."""
    torch.manual_seed(0)
    problem = landscape.from_module(MaskedGPT().eval(), modadd(), "cross_entropy")
    sym = landscape.symmetry(problem)
    expected, attention, _ = EXPECTED["gpt-arange-positions"]
    assert groups(sym) == dict(expected, **{f"{a}.attn.{k}": v for a in attention for k, v in ATTN.items()})
    theta = torch.randn(problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 2
    reference = leaves(problem, theta)
    assert int(reference.isinf().sum()) == len(modadd()[1])
    for moved in moved_copies(problem, sym, theta):
        torch.testing.assert_close(leaves(problem, moved), reference, rtol=1e-10, atol=1e-10)


class RMS32(nn.Module):
    """Hugging Face's LlamaRMSNorm: normalized in float32 whatever the model's dtype, cast back, then the gain."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        h = x.to(torch.float32)
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class Sloped(Llama):
    """LLaMA with ALiBi-like fixed slopes added to each head's scores, a different one per head: permuting heads
    changes the function, which nothing in the forward's units shows (only the check can see it)."""

    def forward(self, tok):
        x = self.embed(tok)
        B, T, C = x.shape
        h = self.n1(x)
        q, k, v = (w(h).view(B, T, self.h, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        pos = torch.arange(T, dtype=x.dtype)
        slopes = torch.tensor([0.5, 2.0], dtype=x.dtype)[:, None, None] * (pos[None, :] - pos[:, None])
        y = torch.softmax(q @ k.transpose(-2, -1) + slopes, dim=-1) @ v
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, C))
        h = self.n2(x)
        x = x + self.w2(F.silu(self.w1(h)) * self.w3(h))
        return self.out(self.nf(x))[:, -1]


def hf_llama(make=Llama):
    torch.manual_seed(0)
    net = make()
    net.n1, net.n2, net.nf = (RMS32(4) for _ in range(3))
    return landscape.from_module(net.eval(), modadd(), "cross_entropy")


def test_a_norm_computed_in_float32_keeps_the_stream_and_a_broken_symmetry_is_still_dropped():
    """Was ``resid`` dropped ("a permutation changed the outputs", by float32's rounding ~1e-7 against a 1e-9
    check): LLaMA as Hugging Face writes it lost its stream. The check now allows float32's rounding where the
    forward casts to float32, and still drops the heads of a model whose heads differ (fixed slopes)."""
    problem = hf_llama()
    sym = landscape.symmetry(problem)
    expected, attention, _ = EXPECTED["llama-rmsnorm-swiglu"]
    assert groups(sym) == dict(expected, **{f"{a}.attn.{k}": v for a in attention for k, v in ATTN.items()})
    assert sym.layer_norm  # an RMSNorm stream: permutations only
    theta = torch.randn(problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 2
    reference = leaves(problem, theta)
    for moved in moved_copies(problem, sym, theta):
        gap = float((leaves(problem, moved) - reference).abs().max())
        assert gap <= 1e-5 * (1 + float(reference.abs().max()))
    broken = landscape.symmetry(hf_llama(Sloped))
    assert groups(broken) == expected
    assert "wk+wq.attn.qk, wk+wq.attn.vo: a permutation changed the outputs" in broken.skipped


class Widths(nn.Module):
    """Three attention layers of one width, d = 8: 2 heads of 4 dimensions, twice, then 4 heads of 2."""

    def __init__(self, heads=(2, 2, 4), d=8):
        super().__init__()
        self.embed, self.pos = nn.Embedding(P + 1, d), nn.Parameter(torch.randn(3, d) / 2)
        self.attn = nn.ModuleList(Heads(d, h) for h in heads)
        self.out = nn.Linear(d, P)

    def forward(self, tok):
        x = self.embed(tok) + self.pos
        for layer in self.attn:
            x = x + layer(x)
        return self.out(x)[:, -1]


def test_layers_with_other_numbers_of_heads_of_the_same_width_are_told_apart():
    """Was the 4-head layer taken for 2 heads of 4 (the same 8 query dimensions), then dropped by the check as "a
    permutation changed the outputs"; now it is named for what it is, and the two 2-head layers keep their heads."""
    torch.manual_seed(0)
    problem = landscape.from_module(Widths().eval(), modadd(), "cross_entropy")
    sym = landscape.symmetry(problem)
    assert (sym.heads, sym.d_head) == (2, 4)
    assert {n for n in groups(sym) if ".attn." in n} == {f"attn.{i}.attn.{k}" for i in (0, 1) for k in ("qk", "vo")}
    assert any(s.startswith("attention of attn.2.") and "heads of another size" in s for s in sym.skipped)
    theta = torch.randn(problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 2
    for moved in moved_copies(problem, sym, theta):
        torch.testing.assert_close(leaves(problem, moved), leaves(problem, theta), rtol=1e-10, atol=1e-10)


class Sinusoidal(nn.Module):
    """Vaswani et al.'s fixed positions: a sin/cos table (a buffer) added to the embedding, one attention layer."""

    def __init__(self, d=4):
        super().__init__()
        pos, freq = torch.arange(3.0)[:, None], torch.exp(-torch.arange(0, d, 2) * math.log(1e4) / d)
        self.register_buffer("pe", torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], -1).reshape(3, d))
        self.embed, self.attn, self.out = nn.Embedding(P + 1, d), Heads(d, 2), nn.Linear(d, P)

    def forward(self, tok):
        x = self.embed(tok) + self.pe
        return self.out(x + self.attn(x))[:, -1]


def test_a_stream_kept_fixed_by_a_position_table_is_named_in_skipped():
    """Was lost silently (``skipped`` empty): the table differs across the stream's dimensions, so no permutation of
    them keeps the function; the heads, which the table does not touch, are kept."""
    torch.manual_seed(0)
    problem = landscape.from_module(Sinusoidal().eval(), modadd(), "cross_entropy")
    sym = landscape.symmetry(problem)
    assert groups(sym) == {"attn.attn.qk": (4, 1.0), "attn.attn.vo": (4, 1.0)}
    assert any(s.startswith("resid: ") for s in sym.skipped)
    theta = torch.randn(problem.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64) / 2
    for moved in moved_copies(problem, sym, theta):
        torch.testing.assert_close(leaves(problem, moved), leaves(problem, theta), rtol=1e-10, atol=1e-10)
    swap = torch.randperm(4, generator=torch.Generator().manual_seed(0))  # the stream permuted: another function
    moved = theta.clone()
    embedded = problem.layout.unflatten(moved)
    for name in ("embed.weight", "attn.q.weight", "attn.k.weight", "attn.v.weight", "out.weight"):
        embedded[name].copy_(embedded[name][:, swap])
    for name in ("attn.out.weight", "attn.out.bias"):
        embedded[name].copy_(embedded[name][swap])
    assert float((leaves(problem, moved) - leaves(problem, theta)).abs().max()) > 1e-3
