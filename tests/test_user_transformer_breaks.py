"""Users' transformers written the common ways, against the capture (a skeptical pass): each model's bound holds
the module's own loss re-evaluated in float64 (a deep copy, nothing of the project's) densely on a segment, at
init scale and at 10x, and a proof is never below the segment's peak; each test fails on the code before its fix.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_proof_attention import check_pieces, modadd, problem_of
from torch import nn

from landscape.paths.proof import prove_below

P = 3
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def holds_dense_points(net, scales=(1.0, 10.0), seed=1, rtol=0.05):
    """The module's bound at ``scales`` times two init points: every piece of the segment holds 4,001 float64 points
    of the module's own loss (``check_pieces``), is finite, a piece of 1e-4 is within ``rtol`` of its dense maximum,
    and no proof claims a level below the segment's peak."""
    problem = problem_of(net)
    assert problem.bounds_unavailable() is None
    a, b = problem.init(torch.Generator().manual_seed(seed), n=2, dtype=torch.float64)
    for scale in scales:
        bounds, worst = check_pieces(net, problem, scale * a, scale * b, [0.0, 0.3, 0.5, 0.5001, 1.0], points=4001)
        assert bool(torch.isfinite(bounds).all()) and float(bounds[2] - worst[2]) < rtol * float(worst[2])
        peak = float(worst.max())
        assert prove_below(problem, scale * torch.stack([a, b]), peak * (1 - 1e-9), budget=200).status != "proven"
    assert problem.bounds_unavailable() is None  # nothing found while propagating either


class Masked(nn.Module):
    """``nn.MultiheadAttention`` with a boolean causal ``attn_mask`` (True: not attended), mean-pooled tokens. The
    layer turns the mask additive with ``masked_fill_`` on a fresh tensor of its own: that in-place operation was
    taken for a Python ``+=`` the trace had missed, and the proof refused ('an in-place operator ...')."""

    def __init__(self, d=4, heads=2, batch_first=True):
        super().__init__()
        self.emb, self.pos = nn.Embedding(P + 1, d), nn.Parameter(0.3 * torch.randn(1, 3, d))
        self.attn = nn.MultiheadAttention(d, heads, batch_first=batch_first)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, P)

    def forward(self, idx):
        x = self.emb(idx) + self.pos
        mask = torch.triu(torch.ones(x.size(1), x.size(1), dtype=torch.bool), 1)
        h = x if self.attn.batch_first else x.transpose(0, 1)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        a = a if self.attn.batch_first else a.transpose(0, 1)
        return self.head(self.norm(x + a).mean(1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_a_boolean_mask_is_bounded_and_holds_dense_points_at_init_and_10x(batch_first):
    torch.manual_seed(0)
    holds_dense_points(Masked(batch_first=batch_first).eval(), rtol=1e-3)


class Causal(nn.Module):
    """PyTorch's own layer, pre-norm, with the additive causal mask of ``generate_square_subsequent_mask`` (−inf
    above the diagonal). At 10x an init point the scores reach ~10³: the softmax's bound of a masked entry (its
    probability is 0) came from the filler put in its place, exp(10³) overflowed, and inf·0 made every piece's bound
    NaN, so no proof ever closed there."""

    def __init__(self, d=4, heads=2):
        super().__init__()
        self.emb = nn.Embedding(P + 1, d)
        self.layer = nn.TransformerEncoderLayer(d, heads, 8, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(d, P)

    def forward(self, idx):
        mask = nn.Transformer.generate_square_subsequent_mask(idx.size(1))
        return self.head(self.layer(self.emb(idx), src_mask=mask, is_causal=True).mean(1))


def test_a_causal_softmax_with_large_scores_has_finite_bounds_that_hold_dense_points():
    torch.manual_seed(0)
    holds_dense_points(Causal().eval(), scales=(10.0,), seed=3, rtol=1e-2)


class Conv1D(nn.Module):
    """Hugging Face's ``transformers.pytorch_utils.Conv1D``: weight [in, out], ``addmm`` on the rows merged."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf, self.weight, self.bias = nf, nn.Parameter(0.5 * torch.randn(nx, nf)), nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2(nn.Module):
    """GPT-2 as Hugging Face wrote it (before its attention interface): ``Conv1D`` for c_attn, c_proj, c_fc, the fused
    qkv ``split(d, dim=2)``, heads by ``view``/``permute``, the causal mask a registered buffer sliced and applied with
    ``torch.where(mask, w.to(w.dtype), torch.finfo(w.dtype).min)``, ``NewGELUActivation`` (tanh of x + 0.044715·x³),
    pre-LN, tied ``x @ wte.weight.T``. It was refused three times over (torch.fx could not trace ``finfo`` of a traced
    dtype; ``addmm``; ``pow(x, 3.0)``)."""

    def __init__(self, d=4, heads=2, merged_elsewhere=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(P + 1, d), nn.Embedding(8, d)
        self.register_buffer("bias", torch.tril(torch.ones(8, 8, dtype=torch.bool)).view(1, 1, 8, 8), persistent=False)
        self.ln_1, self.ln_2, self.ln_f = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj, self.c_fc, self.mlp_proj = Conv1D(3 * d, d), Conv1D(d, d), Conv1D(4 * d, d), \
            Conv1D(d, 4 * d)
        self.d, self.heads, self.merged_elsewhere = d, heads, merged_elsewhere

    def heads_of(self, t):
        return t.view(t.size()[:-1] + (self.heads, self.d // self.heads)).permute(0, 2, 1, 3)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(0, idx.size(-1), dtype=torch.long, device=idx.device).unsqueeze(0))
        q, k, v = self.c_attn(self.ln_1(x)).split(self.d, dim=2)
        q, k, v = self.heads_of(q), self.heads_of(k), self.heads_of(v)
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5, dtype=q.dtype)
        length = w.size(-1)
        mask_value = torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype, device=w.device)
        w = torch.where(self.bias[:, :, :length, :length], w.to(w.dtype), mask_value)
        a = torch.matmul(F.softmax(w, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        x = x + self.c_proj(a.view(a.size()[:-2] + (self.d,)))
        h = self.c_fc(self.ln_2(x))
        if self.merged_elsewhere:  # rows merged with positions, then averaged over them all: mixes the samples
            return h.view(-1, h.size(-1)).mean(0, keepdim=True).expand(idx.size(0), -1)[:, :P]
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        x = self.ln_f(x + self.mlp_proj(h))
        return (x @ self.wte.weight.T)[:, -1, :]


def test_hugging_face_gpt2_conv1d_where_finfo_and_new_gelu_are_bounded_at_init_and_10x():
    torch.manual_seed(0)
    holds_dense_points(GPT2().eval())


def test_rows_merged_with_positions_and_used_otherwise_are_refused_and_the_loss_stays_exact():
    torch.manual_seed(0)
    net = GPT2(merged_elsewhere=True).eval()
    problem = problem_of(net)
    # every operation has a rule: found while propagating (the construction's check bounds pieces)
    assert "applied to a Merged" in problem.bounds_unavailable()
    assert problem.segment_bounds(*problem.init(torch.Generator().manual_seed(1), n=2)[:, None]) is None
    theta = problem.init(torch.Generator().manual_seed(1), n=1, dtype=torch.float64)[0]
    x, y = modadd()
    m = problem.to_module(theta).double()
    assert torch.allclose(problem.loss(theta[None])[0], F.cross_entropy(m(x), y), rtol=1e-12, atol=0)


class ComplexRotary(nn.Module):
    """Meta's LLaMA rotary positions: a complex buffer ``freqs_cis = torch.polar(...)`` times the queries seen as
    complex numbers (``view_as_complex``). The differential check's reference copy was made with
    ``module.to(torch.float64)``, which casts complex buffers to real (dropping the imaginary part): the reference
    was another function, and the model was refused as 'not deterministic'."""

    def __init__(self, d=4):
        super().__init__()
        self.emb, self.wq, self.head = nn.Embedding(P + 1, d), nn.Linear(d, d), nn.Linear(d, P)
        angles = torch.outer(torch.arange(8).float(), 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d)))
        self.register_buffer("freqs_cis", torch.polar(torch.ones_like(angles), angles))

    def forward(self, idx):
        q = self.wq(self.emb(idx))
        q = torch.view_as_complex(q.reshape(*q.shape[:-1], -1, 2).contiguous()) * self.freqs_cis[:idx.size(1)]
        return self.head(torch.view_as_real(q).flatten(2).mean(1))


def test_a_complex_rotary_buffer_is_kept_complex_by_the_check_and_the_loss_and_gradient_are_the_modules():
    torch.manual_seed(0)
    net = ComplexRotary().eval()
    problem = problem_of(net)  # refused before
    x, y = modadd()
    thetas = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    values, grads = problem.loss_and_grad(torch.cat([thetas, 10 * thetas]))
    for theta, value, grad in zip(torch.cat([thetas, 10 * thetas]), values, grads):
        m = copy.deepcopy(net).double()  # floating tensors only: the buffer stays complex
        torch.nn.utils.vector_to_parameters(theta, m.parameters())
        assert m.freqs_cis.is_complex()
        loss = F.cross_entropy(m(x), y)
        ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(m.parameters()))])
        assert abs(float(value - loss.detach())) <= 1e-12 * float(loss.detach())
        assert float((grad - ref).abs().max()) <= 1e-10 * float(ref.abs().max())


class Summed(nn.Module):
    """Tokens pooled by a sum and ``nn.MultiheadAttention``'s returned weights used (need_weights=True, the default):
    ``.sum(dim)`` over a dimension other than the batch's had no rule, and the proof was refused."""

    def __init__(self, d=4, heads=2):
        super().__init__()
        self.emb = nn.Embedding(P + 1, d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = nn.Linear(d, P)

    def forward(self, idx):
        x = self.emb(idx)
        a, weights = self.attn(x, x, x)
        return self.head(torch.sum(a, 1) + weights.sum(-2)[..., :1] * x.sum(dim=1, keepdim=False))


def test_sums_over_tokens_and_of_attention_weights_are_bounded_and_hold_dense_points():
    torch.manual_seed(0)
    holds_dense_points(Summed().eval())
