"""Transformers written the common ways, proven: positions from ``torch.arange`` and masks built from ``x.size(1)``
in ``forward``, PyTorch's default ``batch_first=False`` attention layers, RMSNorm (torch's and written out), SiLU and
SwiGLU, a cls token ``expand``-ed over the batch, ``einsum`` with ``...``.

Each model was refused before (the dense check, with the reason); each now gets bounds that hold the module's own
loss re-evaluated in float64 (``torch.func.functional_call`` of a float64 copy, nothing of the project's) at 100,001
points of a segment, random and trained, with a sharp softmax switch placed between grid points, and a proof above
the segment's peak, never below it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_proof_attention import check_pieces, dense_loss, modadd, no_fused_attention, problem_of  # noqa: F401
from torch import nn

from landscape.paths.proof import prove_below
from landscape.problems import attention_bounds as ab
from landscape.problems.relaxed import Model

P = 3
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning",
                                        "ignore:enable_nested_tensor:UserWarning")


class GPT(nn.Module):
    """nanoGPT's way: ``pos = torch.arange(0, t, device=idx.device)`` looked up in ``nn.Embedding``, a causal mask
    ``torch.triu(torch.ones(T, T), 1).bool()`` made in forward, a fused qkv ``split`` into heads."""

    def __init__(self, d=4, heads=2, act=F.gelu):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(P + 1, d), nn.Embedding(8, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj, self.head = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.Linear(d, P)
        self.h, self.act = heads, act

    def forward(self, idx):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        B, T, C = x.size()
        q, k, v = self.c_attn(self.ln1(x)).split(C, dim=2)
        q, k, v = (z.view(B, T, self.h, C // self.h).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        mask = torch.triu(torch.ones(T, T, device=x.device), diagonal=1).bool()
        att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        x = x + self.proj(self.act(self.fc(self.ln2(x))))
        return self.head(x)[:, -1, :]


class SeqFirst(nn.Module):
    """PyTorch's defaults: ``x.transpose(0, 1)`` to [T, N, E], ``nn.MultiheadAttention(d, h)`` and
    ``nn.TransformerEncoderLayer(d, h)`` (batch_first=False), positions ``self.pos[: x.size(0)]`` of shape [T, 1, E]."""

    def __init__(self, d=4, heads=2, layer=True):
        super().__init__()
        self.embed, self.pos = nn.Embedding(P + 1, d), nn.Parameter(torch.randn(3, 1, d) / 2)
        self.mha = nn.MultiheadAttention(d, heads)
        self.layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0) if layer else None
        self.out = nn.Linear(d, P)

    def forward(self, tok):
        x = self.embed(tok).transpose(0, 1)
        x = x + self.pos[: x.size(0)]
        x = x + self.mha(x, x, x, need_weights=False)[0]
        if self.layer is not None:
            x = self.layer(x)
        return self.out(x[-1])


class RMS(nn.Module):
    """RMSNorm written out, as LLaMA's reference code does."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Llama(nn.Module):
    """LLaMA's way: RMSNorm (``nn.RMSNorm``, or written out), a SwiGLU MLP ``w2(F.silu(w1(h)) * w3(h))``, no biases;
    an additive causal mask ``torch.full((T, T), float('-inf')).triu(1)`` made in forward, or (``hand``) rotary
    positions as Hugging Face writes them (``q * cos + rotate_half(q) * sin``, tables sliced ``[:T]``) and
    ``F.scaled_dot_product_attention(is_causal=True)``."""

    def __init__(self, d=4, heads=2, hand=False):
        super().__init__()
        dh = d // heads
        angles = torch.outer(torch.arange(16.0), 1.0 / 10000 ** (torch.arange(0, dh, 2).float() / dh))
        self.register_buffer("cos", torch.cat([angles, angles], -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat([angles, angles], -1).sin(), persistent=False)
        self.hand = hand
        self.embed = nn.Embedding(P + 1, d)
        self.n1, self.n2, self.nf = (RMS(d) if hand else nn.RMSNorm(d) for _ in range(3))
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1, self.w2, self.w3 = (nn.Linear(d, 2 * d, bias=False), nn.Linear(2 * d, d, bias=False),
                                     nn.Linear(d, 2 * d, bias=False))
        self.out, self.h = nn.Linear(d, P, bias=False), heads

    def forward(self, tok):
        x = self.embed(tok)
        B, T, C = x.shape
        h = self.n1(x)
        q, k, v = (w(h).view(B, T, self.h, -1).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        if self.hand:
            cos, sin = self.cos[:T], self.sin[:T]
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = torch.full((T, T), float("-inf"), device=x.device).triu(1)
            y = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // self.h) + mask, dim=-1) @ v
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, C))
        h = self.n2(x)
        x = x + self.w2(F.silu(self.w1(h)) * self.w3(h))
        return self.out(self.nf(x))[:, -1]


class ViT(nn.Module):
    """A cls token ``self.cls.expand(x.shape[0], -1, -1)`` then ``torch.cat``; ``einsum`` with ``...``; an
    ``nn.SiLU`` MLP; the output read at the cls token."""

    def __init__(self, d=4, heads=2):
        super().__init__()
        self.embed, self.cls = nn.Embedding(P + 1, d), nn.Parameter(torch.randn(1, 1, d))
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Parameter(torch.randn(d, d) / 2)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
        self.out, self.h = nn.Linear(d, P), heads

    def forward(self, tok):
        x = self.embed(tok)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.einsum("...qd,...kd->...qk", q, k).softmax(-1)
        y = torch.einsum("...qk,...kd->...qd", att, v).transpose(1, 2).reshape(B, N, C)
        x = x + torch.einsum("...d,ed->...e", y, self.proj)
        x = x + self.mlp(x)
        return self.out(x[:, 0])


MODELS = {"gpt-arange-positions": GPT, "seq-first-encoder-layer": SeqFirst,
          "seq-first-multihead": lambda: SeqFirst(layer=False), "llama-rmsnorm-swiglu": Llama,
          "llama-written-rmsnorm-rotary": lambda: Llama(hand=True), "vit-cls-expand-einsum": ViT}
CUTS = [0.0, 0.2, 0.23, 0.5, 0.5001, 0.5002, 0.8, 1.0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_user_written_transformers_hold_100k_float64_points_and_are_proven_above_their_peak(name):
    torch.manual_seed(0)
    net = MODELS[name]().eval()
    problem = problem_of(net)
    assert problem.bounds_unavailable() is None
    a, b = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    bounds, worst = check_pieces(net, problem, a, b, CUTS)
    # written out, 1/√(mean(x²) + ε) has no bound where the square's relaxation reaches below 0 (the piece is split)
    assert bool(torch.isfinite(bounds if "written" not in name else bounds[[1, 3, 4]]).all())
    assert float(bounds[4] - worst[4]) < 1e-3 * float(worst[4])  # a piece of 1e-4: tight
    peak = float(worst.max())
    proof = prove_below(problem, torch.stack([a, b]), peak * 1.01, budget=5000)
    assert proof.status == "proven" and peak <= proof.bound <= peak * 1.01
    assert prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=300).status != "proven"
    assert problem.bounds_unavailable() is None  # nothing found while propagating either


def test_a_sharp_softmax_switch_between_grid_points_in_a_nanogpt_block_is_inside_the_bound():
    """The queries (the first rows of the fused ``c_attn``) scaled by (t − centre)·10⁴: every score passes through 0
    at t = centre, a point between two of the 100,001 grid points, and the causal attention flips there."""
    torch.manual_seed(4)
    net = GPT().eval()
    problem = problem_of(net)
    a = problem.init(torch.Generator().manual_seed(3), n=1, dtype=torch.float64)[0]
    named, centre, ends = problem.layout.unflatten(a[None]), 0.5 + 1 / 3e5, []
    for t in (0.0, 1.0):
        params = {k: v[0].clone() for k, v in named.items()}
        params["c_attn.weight"][:4] *= (t - centre) * 1e4
        params["c_attn.bias"][:4] *= (t - centre) * 1e4
        ends.append(problem.layout.flatten({k: params[k] for k in problem.layout.names}))
    a, b = ends
    x, y = modadd()
    fine = torch.linspace(0.4999, 0.5001, 20_001, dtype=torch.float64)
    fine_loss = dense_loss(net, a + fine[:, None] * (b - a), x, y)
    bounds, worst = check_pieces(net, problem, a, b, [0.0, 0.25, 0.4999, 0.5001, 0.75, 1.0])
    assert float(bounds[2]) >= float(fine_loss.max())
    peak = max(float(worst.max()), float(fine_loss.max()))
    assert prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=300).status != "proven"


def _trained(make, seed, steps=300):
    torch.manual_seed(seed)
    net = make()
    x, y = modadd()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("make", [GPT, Llama], ids=["gpt", "llama"])
def test_trained_user_transformers_the_linear_path_holds_100k_points_and_is_proven_above_its_peak(make):
    nets = [_trained(make, seed) for seed in (0, 1)]
    problem = problem_of(nets[0])
    a, b = (torch.nn.utils.parameters_to_vector(n.parameters()).double().detach() for n in nets)
    assert float(problem.loss(a)) < 0.2 and float(problem.loss(b)) < 0.2  # trained (from ~1.1 at the start)
    bounds, worst = check_pieces(nets[0], problem, a, b, torch.linspace(0, 1, 17).tolist())
    peak = float(worst.max())
    assert prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=300).status != "proven"
    proof = prove_below(problem, torch.stack([a, b]), peak * 1.05 + 1e-3, budget=20_000)
    assert proof.status == "proven" and proof.bound >= peak


def test_rms_norm_through_a_zero_mean_square_between_grid_points_is_inside_the_bound():
    """The embedding scaled by (t − centre)·10: every token's vector, so every mean square, is 0 at t = centre
    (between grid points), where nn.RMSNorm's default ε (the data type's) makes 1/√(ms + ε) ~ 10⁸."""
    torch.manual_seed(4)
    net = Llama().eval()
    problem = problem_of(net)
    a = problem.init(torch.Generator().manual_seed(6), n=1, dtype=torch.float64)[0]
    named, centre, ends = problem.layout.unflatten(a[None]), 0.5 + 1 / 3e5, []
    for t in (0.0, 1.0):
        params = {k: v[0].clone() for k, v in named.items()}
        params["embed.weight"] *= (t - centre) * 10
        ends.append(problem.layout.flatten({k: params[k] for k in problem.layout.names}))
    bounds, worst = check_pieces(net, problem, *ends, [0.0, 0.4999, 0.49999, 0.5, 0.5000033, 0.50001, 0.5001, 1.0])
    assert bool(torch.isfinite(bounds).all())  # the output's cap |y| ≤ √D keeps every piece bounded


def test_silu_relaxation_holds_densely_around_its_minimum_and_its_slope_extremes():
    from landscape.problems.attention_bounds import SILU

    g = torch.Generator().manual_seed(0)
    s = torch.linspace(-1, 1, 2001, dtype=torch.float64)[:, None]
    centres = torch.tensor([-1.2785, -2.3994, 2.3994, 0.0], dtype=torch.float64)
    for trial in range(40):
        c = torch.cat([centres, (torch.rand(60, generator=g, dtype=torch.float64) - 0.5) * 16])
        v = torch.randn(64, generator=g, dtype=torch.float64) * 10 ** (trial % 4 - 2)
        r = torch.rand(64, generator=g, dtype=torch.float64) * 10 ** (trial % 3 - 3)
        oc, os_, orem = SILU(c, v, r)
        for e in (-1.0, -0.3, 0.0, 0.6, 1.0):
            exact = F.silu(c + s * v + e * r)
            assert bool(((exact - (oc + s * os_)).abs() <= orem + 1e-12).all()), trial
    low = SILU(torch.tensor([-1.2785], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
               torch.tensor([0.0], dtype=torch.float64))
    assert float(low[0] - low[1].abs() - low[2]) <= -0.27846  # the minimum −0.27846 at −1.2785 is inside


def test_rms_norm_relaxation_holds_near_zero_mean_squares():
    g = torch.Generator().manual_seed(1)
    s = torch.linspace(-1, 1, 401, dtype=torch.float64)[:, None, None]
    for trial in range(60):
        scale = 10 ** (-8 * float(torch.rand(1, generator=g)))
        c = torch.randn(8, 4, generator=g, dtype=torch.float64) * scale
        v = torch.randn(8, 4, generator=g, dtype=torch.float64) * scale * float(torch.rand(1, generator=g))
        r = torch.rand(8, 4, generator=g, dtype=torch.float64) * scale * 0.1 * float(torch.rand(1, generator=g))
        eps = (1e-6, torch.finfo(torch.float64).eps, 1e-12)[trial % 3]
        oc, os_, orem = ab.rms_norm(Model(c, v, r), 1, eps).full()
        for k in range(6):
            sign = torch.randint(0, 2, (8, 4), generator=g).double() * 2 - 1
            e = sign * r if k < 4 else (torch.rand(8, 4, generator=g, dtype=torch.float64) * 2 - 1) * r
            exact = F.rms_norm(c + s * v + e, (4,), eps=eps)
            assert bool(((exact - (oc + s * os_)).abs() <= orem + 1e-12).all()), (trial, k)


class Pattern(nn.Module):
    """Patterns still refused (no sound bound here), and three more that are bounded."""

    def __init__(self, how):
        super().__init__()
        self.how, self.embed, self.out = how, nn.Embedding(P + 1, 4), nn.Linear(4, P)
        self.wpe, self.pos, self.lin = nn.Embedding(20, 4), nn.Parameter(torch.randn(3, 4)), nn.Linear(4, 4)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0), 1,
                                         enable_nested_tensor=False)

    def forward(self, tok):
        x, how = self.embed(tok), self.how
        if how == "softmax_over_the_sequence_seq_first":
            return self.out(x.transpose(0, 1).softmax(0)[-1])
        if how == "mean_pooling_seq_first":
            return self.out(x.transpose(0, 1).mean(0))
        if how == "positions_from_the_batch_size":
            return self.out(x[:, -1] + self.wpe(torch.arange(x.size(0))))
        if how == "in_place_on_a_constant":
            m = torch.zeros(x.size(1), x.size(1))
            m.fill_(1.0)
            return self.out((x * m.sum()).mean(1))
        if how == "mask_from_the_tokens":
            return self.out(x.masked_fill((tok == 0).unsqueeze(-1), 0.0)[:, -1])
        if how == "transposed_weight":
            return self.out(x[:, -1] @ self.lin.weight.T)
        if how == "square_subsequent_mask_seq_first":
            y = x.transpose(0, 1)
            return self.out(self.enc(y, mask=nn.Transformer.generate_square_subsequent_mask(y.size(0)))[-1])
        return self.out((x + self.pos[torch.arange(x.shape[1])])[:, -1])  # positions indexed by an arange


@pytest.mark.parametrize("how,says", [
    ("softmax_over_the_sequence_seq_first", "softmax of a value whose batch dimension is not first"),
    ("mean_pooling_seq_first", "mean of a value whose batch dimension is not first"),
    ("positions_from_the_batch_size", "batch size"), ("in_place_on_a_constant", ".fill_()"),
    ("mask_from_the_tokens", "function eq"),
])
def test_patterns_with_no_sound_bound_keep_the_dense_check_and_say_why(how, says):
    problem = problem_of(Pattern(how).eval())
    a, b = problem.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    assert problem.bounds_unavailable() is not None or problem.segment_bounds(a[None], b[None]) is None
    assert says in problem.bounds_unavailable()


@pytest.mark.parametrize("how", ["square_subsequent_mask_seq_first", "positions_indexed_by_an_arange",
                                 "transposed_weight"])
def test_a_mask_made_by_torch_positions_indexed_by_an_arange_and_a_transposed_weight_are_bounded(how):
    torch.manual_seed(0)
    net = Pattern(how).eval()
    problem = problem_of(net)
    a, b = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    bounds, _ = check_pieces(net, problem, a, b, [0.0, 0.3, 0.5, 0.5001, 1.0])
    assert bool(torch.isfinite(bounds).all()) and problem.bounds_unavailable() is None


class CausalHint(nn.Module):
    """``is_causal=True`` beside an attention mask: torch may apply the causal mask in place of the one given."""

    def __init__(self, mask):
        super().__init__()
        self.embed, self.pos = nn.Embedding(P + 1, 4), nn.Parameter(torch.randn(3, 4))
        self.mha, self.out = nn.MultiheadAttention(4, 2, batch_first=True), nn.Linear(4, P)
        self.register_buffer("mask", mask)

    def forward(self, tok):
        x = self.embed(tok) + self.pos
        return self.out(self.mha(x, x, x, attn_mask=self.mask, is_causal=True, need_weights=False)[0][:, -1])


def test_the_is_causal_hint_is_bounded_with_the_causal_mask_only():
    hidden_past = torch.ones(3, 3, dtype=torch.bool).tril(-1)  # not causal: torch would compute with the causal one
    assert "not the causal one" in problem_of(CausalHint(hidden_past).eval()).bounds_unavailable()
    torch.manual_seed(0)
    net = CausalHint(nn.Transformer.generate_square_subsequent_mask(3)).eval()
    problem = problem_of(net)
    a, b = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    bounds, _ = check_pieces(net, problem, a, b, [0.0, 0.5, 0.5001, 1.0], points=20_001)
    assert bool(torch.isfinite(bounds).all())
