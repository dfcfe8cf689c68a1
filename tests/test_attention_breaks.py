"""Transformers written the ways users write them, found wrongly proven or wrongly refused, now bounded soundly.

Each case is checked against the module's own loss in float64 (``torch.func.functional_call`` of a float64 copy and
``F.cross_entropy``, nothing of the project's) on a dense grid of the segment.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape
from landscape.problems import attention_bounds as ab
from landscape.problems.relaxed import Model
from test_proof_attention import no_fused_attention  # noqa: F401 (an autouse fixture)

P, D = 3, 4
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning",
                                        "ignore:enable_nested_tensor:UserWarning")


def modadd():
    a, b = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    return torch.stack([a, b, torch.full_like(a, P)], 1), (a + b) % P


def dense_loss(net, a, b, t):
    """The module's own loss in float64 at a + t (b − a)."""
    m = copy.deepcopy(net).double().eval()
    named = [(n, p.shape) for n, p in m.named_parameters()]
    x, y = modadd()

    def loss(theta):
        params = {n: v.view(s) for (n, s), v in zip(named, theta.split([math.prod(s) for _, s in named]))}
        return F.cross_entropy(torch.func.functional_call(m, params, (x,)), y)

    with torch.no_grad():
        return torch.vmap(loss)(a + t[:, None] * (b - a))


def assert_pieces_hold(net, problem, a, b, cuts, points=2001):
    t = torch.cat([torch.linspace(0, 1, points, dtype=torch.float64), torch.tensor(cuts, dtype=torch.float64)])
    t = t.unique()
    loss = dense_loss(net, a, b, t)
    cut = torch.tensor(cuts, dtype=torch.float64)
    bounds = problem.segment_bounds(a + cut[:-1, None] * (b - a), a + cut[1:, None] * (b - a))
    for i in range(len(cuts) - 1):
        inside = loss[(t >= cut[i]) & (t <= cut[i + 1])]
        assert math.isfinite(float(bounds[i])) and float(bounds[i]) >= float(inside.max()), (i, bounds, inside.max())
    return bounds


class InPlaceBehindDropout(nn.Module):
    """``h += ...`` on a value also read as ``keep``, beside an in-place Dropout that changes nothing in evaluation
    mode: the dispatcher sees one mutation, the trace one in-place node."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(P + 1, D)
        self.lin_h, self.lin_k, self.out = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, P)
        self.drop = nn.Dropout(0.1, inplace=True)

    def forward(self, tok):
        x = self.embed(tok)
        h = self.drop(self.lin_h(x))
        keep = h
        h += F.relu(self.lin_k(x) - 50.0)  # 0 at ordinary weights: the differential check cannot see it there
        return self.out(h + keep)[:, -1]


def test_an_in_place_dropout_in_evaluation_mode_does_not_hide_an_augmented_assignment():
    problem = landscape.from_module(InPlaceBehindDropout().eval(), modadd(), "cross_entropy")
    assert "in-place operator" in (problem.bounds_unavailable() or "")


class Encoder(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.embed, self.pos = nn.Embedding(P + 1, D), nn.Parameter(torch.randn(3, D) / 2)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 2, 8, dropout=0.0, batch_first=True), 2,
                                         enable_nested_tensor=False)
        self.out = nn.Linear(D, P)
        self.register_buffer("mask", mask)

    def forward(self, tok):
        return self.out(self.enc(self.embed(tok) + self.pos, mask=self.mask))[:, -1]


def test_an_additive_minus_inf_causal_mask_is_bounded_as_the_boolean_one():
    floats = nn.Transformer.generate_square_subsequent_mask(3)  # 0 below the diagonal, −inf above
    results = []
    for mask in (floats, torch.isinf(floats)):
        torch.manual_seed(0)
        net = Encoder(mask).eval()
        problem = landscape.from_module(net, modadd(), "cross_entropy")
        a, b = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
        results.append(assert_pieces_hold(net, problem, a, b, [0.0, 0.3, 0.5, 0.5001, 1.0]))
    assert torch.allclose(results[0], results[1], rtol=1e-12)


def test_softmax_of_a_value_minus_inf_at_its_centre_is_zero_there_and_holds_elsewhere():
    s = torch.linspace(-1, 1, 100_001, dtype=torch.float64)[:, None, None]
    c = torch.tensor([[0.3, -math.inf, -math.inf], [0.1, 0.2, -math.inf]], dtype=torch.float64)
    v, r = torch.full_like(c, 0.7), torch.full_like(c, 0.05)
    out = ab.softmax(Model(c, v, r), -1)
    oc, os_, orem = out.full()
    assert bool(torch.isfinite(orem).all()) and bool((oc[c == -math.inf] == 0).all())
    for e in (-1.0, 1.0):  # the remainder's two extremes
        exact = torch.softmax(c + s * v + e * r, -1)
        assert bool(((exact - (oc + s * os_)).abs() <= orem + 1e-12).all())


class Written(nn.Module):
    """F.embedding and F.softmax (torch.fx records their every keyword: _stacklevel, norm_type, sparse, ...);
    nn.MultiheadAttention with its own key and value sizes (separate projection weights)."""

    def __init__(self):
        super().__init__()
        self.table, self.q, self.k, self.v = nn.Parameter(torch.randn(P + 1, D)), *(nn.Linear(D, D) for _ in "qkv")
        self.kp, self.vp = nn.Linear(D, 3), nn.Linear(D, 5)
        self.mha = nn.MultiheadAttention(D, 2, batch_first=True, kdim=3, vdim=5)
        self.out = nn.Linear(D, P)

    def forward(self, tok):
        x = F.embedding(tok, self.table)
        x = x + F.softmax(self.q(x) @ self.k(x).transpose(-2, -1) / 2, dim=-1) @ self.v(x)
        x = x + self.mha(x, self.kp(x), self.vp(x), need_weights=False)[0]
        return self.out(x)[:, -1]


def test_functional_softmax_embedding_and_attention_with_kdim_vdim_are_bounded():
    torch.manual_seed(0)
    net = Written().eval()
    problem = landscape.from_module(net, modadd(), "cross_entropy")
    assert problem.bounds_unavailable() is None
    a, b = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    assert_pieces_hold(net, problem, a, b, [0.0, 0.25, 0.5, 0.5001, 1.0])
