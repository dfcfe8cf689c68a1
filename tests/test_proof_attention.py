"""Proofs through attention: the bound of every piece holds the loss at 100,001 float64 points of its segment.

Small transformers written the ways users write them (hand-written heads with ``q @ k.transpose(-2, -1)``, a
timm-style block with a fused qkv ``Linear`` and ``reshape/permute/unbind``, ``F.scaled_dot_product_attention``
with a causal mask, ``masked_fill`` with a mask buffer, ``einsum``, ``nn.MultiheadAttention`` and
``nn.TransformerEncoderLayer``; with and without LayerNorm, ReLU and GELU), random and trained, are re-evaluated
in float64 by ``torch.func.functional_call`` of the module itself (nothing of the project's) on a dense grid of
the segment; every piece's bound must hold every grid point inside it, a level below the grid's maximum is never
proven, and a sharp softmax switch placed between grid points is inside the bound.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import landscape
from landscape.paths.proof import prove_below

P = 3  # modular addition mod 3: 9 samples [a, b, =]
#: torch has no vmap rule for its CPU flash attention (F.scaled_dot_product_attention): it warns, computes the same
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")


def modadd(p=P):
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    return torch.stack([a, b, torch.full_like(a, p)], 1), (a + b) % p


class Heads(nn.Module):
    """Hand-written multi-head attention: separate q/k/v/out Linear, ``view(...).transpose(1, 2)``."""

    def __init__(self, d, heads):
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.heads, self.dh = heads, d // heads

    def forward(self, x):
        n, t, d = x.shape
        q = self.q(x).view(n, t, self.heads, self.dh).transpose(1, 2)
        k = self.k(x).view(n, t, self.heads, self.dh).transpose(1, 2)
        v = self.v(x).view(n, t, self.heads, self.dh).transpose(1, 2)
        att = (q @ k.transpose(-2, -1) / math.sqrt(self.dh)).softmax(dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(n, t, d))


class Fused(nn.Module):
    """timm's Attention: one qkv Linear, ``reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)``."""

    def __init__(self, d, heads, causal=False):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.register_buffer("mask", torch.ones(3, 3, dtype=torch.bool).triu(1), persistent=False)
        self.causal = causal

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.causal:
            attn = attn.masked_fill(self.mask, float("-inf"))
        x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Sdpa(nn.Module):
    """``F.scaled_dot_product_attention`` (causal), heads split by ``chunk`` and an ``einsum`` output map."""

    def __init__(self, d, heads):
        super().__init__()
        self.qkv, self.w_o = nn.Linear(d, 3 * d), nn.Parameter(torch.randn(d, d) / d**0.5)
        self.heads = heads

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, self.heads, -1).permute(0, 2, 1, 3) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).permute(0, 2, 1, 3).reshape(n, t, d)
        return torch.einsum("ntd,ed->nte", y, self.w_o)


class Torchs(nn.Module):
    """``nn.MultiheadAttention`` (batch first) or a whole ``nn.TransformerEncoderLayer``."""

    def __init__(self, d, heads, layer=False):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True,
                                                norm_first=True) if layer else None
        self.mha = None if layer else nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x):
        return self.layer(x) if self.layer is not None else self.mha(x, x, x, need_weights=False)[0]


class HandNorm(nn.Module):
    """LayerNorm written out, as in TransformerLens (or with ``var`` and ``rsqrt``)."""

    def __init__(self, d, var=False):
        super().__init__()
        self.w, self.b, self.var = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d)), var

    def forward(self, x):
        if self.var:
            return (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5) * self.w
        x = x - x.mean(-1, keepdim=True)
        scale = (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
        return x / scale * self.w + self.b


class Net(nn.Module):
    """Embedding + positions, one attention block (pre-norm or none), an MLP, unembedding of the last token."""

    def __init__(self, attention="heads", d=4, heads=2, norm=True, act="relu", p=P):
        norm = {True: lambda: nn.LayerNorm(d), False: nn.Identity, "hand": lambda: HandNorm(d),
                "var": lambda: HandNorm(d, var=True)}[norm]
        super().__init__()
        self.embed, self.pos = nn.Embedding(p + 1, d), nn.Parameter(torch.randn(3, d) / d**0.5)
        self.attn = {"heads": lambda: Heads(d, heads), "fused": lambda: Fused(d, heads),
                     "causal": lambda: Fused(d, heads, causal=True), "sdpa": lambda: Sdpa(d, heads),
                     "mha": lambda: Torchs(d, heads), "layer": lambda: Torchs(d, heads, layer=True)}[attention]()
        self.ln1, self.ln2 = norm(), norm()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.act = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}[act]()
        self.unembed = nn.Linear(d, p)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        x = x + self.attn(self.ln1(x))
        x = x + self.fc2(self.act(self.fc1(self.ln2(x))))
        return self.unembed(x)[:, -1]


NETS = {"heads-ln-relu": dict(attention="heads"), "heads-gelu": dict(attention="heads", norm=False, act="gelu"),
        "heads-gelu-tanh": dict(attention="heads", act="gelu_tanh"), "fused-ln-gelu": dict(attention="fused", act="gelu"),
        "causal-relu": dict(attention="causal", norm=False),
        "sdpa-ln": dict(attention="sdpa"), "mha-ln": dict(attention="mha"),
        "heads-hand-norm": dict(attention="heads", norm="hand"), "fused-var-norm": dict(attention="fused", norm="var"),
        "encoder-layer": dict(attention="layer", norm=False)}


@pytest.fixture(autouse=True)
def no_fused_attention():
    """torch's fused kernels of MultiheadAttention and TransformerEncoderLayer (evaluation mode) have no
    derivative and no vmap rule; the problem's gradient needs the plain path, which computes the same function."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    yield
    torch.backends.mha.set_fastpath_enabled(was)


def problem_of(net):
    return landscape.from_module(net, modadd(), "cross_entropy")


def dense_loss(net, thetas, x, y, chunk=5000):
    """The module's own loss in float64 at each row of ``thetas`` (functional_call under vmap)."""
    m = copy.deepcopy(net).double().eval()
    named = [(n, p.shape) for n, p in m.named_parameters()]

    def loss(theta):
        params = {n: v.view(s) for (n, s), v in zip(named, theta.split([math.prod(s) for _, s in named]))}
        return F.cross_entropy(torch.func.functional_call(m, params, (x,)), y)

    with torch.no_grad():
        return torch.cat([torch.vmap(loss)(t) for t in thetas.split(chunk)])


def check_pieces(net, problem, a, b, cuts, *, points=100_001):
    """Bound the pieces between consecutive ``cuts`` of the segment a → b; every dense point lies below its
    piece's bound (or the bound is not finite: it proves nothing). Returns (bounds, the dense maximum of each
    piece)."""
    x, y = modadd()
    t = torch.linspace(0, 1, points, dtype=torch.float64)
    t = torch.cat([t, torch.tensor(cuts, dtype=torch.float64)]).unique()
    loss = dense_loss(net, a + t[:, None] * (b - a), x, y)
    cuts = torch.tensor(cuts, dtype=torch.float64)
    bounds = problem.segment_bounds(a + cuts[:-1, None] * (b - a), a + cuts[1:, None] * (b - a))
    worst = []
    for i in range(len(cuts) - 1):
        inside = (t >= cuts[i]) & (t <= cuts[i + 1])
        worst.append(float(loss[inside].max()))
        bound = float(bounds[i])  # a non-finite bound claims nothing (a written-out root of a piece reaching 0)
        assert bound >= worst[-1] or not math.isfinite(bound), (i, bound, worst[-1])
    return bounds, torch.tensor(worst, dtype=torch.float64)


CUTS = [0.0, 0.2, 0.23, 0.5, 0.5001, 0.5002, 0.8, 1.0]


@pytest.mark.parametrize("name", sorted(NETS))
def test_every_piece_bound_holds_100k_float64_points_of_a_random_segment(name):
    torch.manual_seed(0)
    net = Net(**NETS[name])
    problem = problem_of(net)
    assert problem.bounds_unavailable() is None
    a, b = problem.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    bounds, worst = check_pieces(net, problem, a, b, CUTS)
    short = bounds[4]  # a piece of length 1e-4: its bound is within a little of the loss on it
    assert float(short - worst[4]) < 1e-3 * float(worst[4])


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_bound_tends_to_the_loss_as_the_piece_shrinks(name):
    torch.manual_seed(1)
    net = Net(**NETS[name])
    problem = problem_of(net)
    a, b = problem.init(torch.Generator().manual_seed(2), n=2, dtype=torch.float64)
    zero = problem.segment_bounds(a[None], a[None])
    assert float(zero[0]) == pytest.approx(float(problem.loss(a)), rel=1e-8)
    gaps = []
    for frac in (1e-2, 1e-3):
        end = a + frac * (b - a)
        top = float(problem.loss(torch.stack([a, end])).max())
        gaps.append(float(problem.segment_bounds(a[None], end[None])[0]) - top)
    assert gaps[1] < gaps[0] / 5 and gaps[1] < 1e-2  # at least first order; second order away from switches


def switch_segment(net, problem, centre, sharpness):
    """A segment along which the queries are (t − centre)·sharpness times the module's: every score passes
    through 0 at t = centre, the attention flips from one pattern to its mirror within ~1/sharpness."""
    a = problem.init(torch.Generator().manual_seed(3), n=1, dtype=torch.float64)[0]
    named = problem.layout.unflatten(a[None])
    ends = []
    for t in (0.0, 1.0):
        params = {k: v[0].clone() for k, v in named.items()}
        params["attn.q.weight"] *= (t - centre) * sharpness
        params["attn.q.bias"] *= (t - centre) * sharpness
        ends.append(problem.layout.flatten({k: params[k] for k in problem.layout.names}))
    return ends


def test_a_sharp_softmax_switch_between_grid_points_is_inside_the_bound():
    torch.manual_seed(4)
    net = Net("heads", norm=False)
    problem = problem_of(net)
    centre = 0.5 + 1 / 3e5  # between two points of the 100,001-point grid
    a, b = switch_segment(net, problem, centre, 1e4)
    x, y = modadd()
    fine = torch.linspace(0.4999, 0.5001, 20_001, dtype=torch.float64)  # the piece around the switch
    fine_loss = dense_loss(net, a + fine[:, None] * (b - a), x, y)
    bounds, worst = check_pieces(net, problem, a, b, [0.0, 0.25, 0.4999, 0.5001, 0.75, 1.0])
    assert float(bounds[2]) >= float(fine_loss.max())
    peak = max(float(worst.max()), float(fine_loss.max()))
    proof = prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=300)
    assert proof.status != "proven"


def test_the_built_in_modadd_transformer_bounds_hold_100k_points():
    problem = landscape.make_problem("modadd_transformer", p=5, d_model=8, heads=2, d_mlp=16, layer_norm=True)
    assert problem.bounds_unavailable() is None
    x, y = problem.data("train")
    a, b = problem.init(torch.Generator().manual_seed(7), n=2, dtype=torch.float64)
    t = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    loss = dense_loss(problem.module_, a + t[:, None] * (b - a), x, y)
    cuts = torch.tensor([0.0, 0.1, 0.5, 0.5001, 1.0], dtype=torch.float64)
    bounds = problem.segment_bounds(a + cuts[:-1, None] * (b - a), a + cuts[1:, None] * (b - a))
    for i in range(4):
        inside = loss[(t >= cuts[i]) & (t <= cuts[i + 1])]
        assert float(bounds[i]) >= float(inside.max()) or not math.isfinite(float(bounds[i]))
    assert float(bounds[2]) < float(loss[(t >= 0.5) & (t <= 0.5001)].max()) * (1 + 1e-3)  # a piece of 1e-4


@pytest.mark.slow
def test_trained_transformers_the_linear_path_bounds_and_a_proof_above_its_peak():
    x, y = modadd()
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = Net("heads", d=8, heads=2)
        opt = torch.optim.Adam(net.parameters(), lr=0.003)
        for _ in range(600):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        nets.append(net)
    problem = problem_of(nets[0])
    a, b = (torch.nn.utils.parameters_to_vector(n.parameters()).double().detach() for n in nets)
    assert float(problem.loss(a)) < 0.2 and float(problem.loss(b)) < 0.2  # trained (from 1.1 at the start)
    cuts = torch.linspace(0, 1, 33).tolist()
    bounds, worst = check_pieces(nets[0], problem, a, b, cuts)
    peak = float(worst.max())
    assert prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=500).status != "proven"
    proof = prove_below(problem, torch.stack([a, b]), peak * 1.05 + 1e-3, budget=20_000)
    assert proof.status == "proven" and proof.bound >= peak


@pytest.mark.parametrize("make,says", [
    (lambda: nn.MultiheadAttention(4, 2), "batch_first=False"),
    (lambda: nn.MultiheadAttention(4, 2, batch_first=True, add_zero_attn=True), "add_zero_attn"),
    (lambda: nn.MultiheadAttention(4, 2, batch_first=True, add_bias_kv=True), "add_bias_kv"),
    (lambda: nn.TransformerEncoderLayer(4, 2, 8, batch_first=True, activation=torch.tanh), "activation"),
])
def test_attention_layers_with_settings_not_bounded_keep_the_dense_check_and_say_why(make, says):
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.layer, self.out = nn.Embedding(P + 1, 4), make(), nn.Linear(4, P)

        def forward(self, tokens):
            h = self.embed(tokens)
            h = self.layer(h) if isinstance(self.layer, nn.TransformerEncoderLayer) else self.layer(h, h, h)[0]
            return self.out(h[:, -1])

    problem = problem_of(Wrap())
    assert says in problem.bounds_unavailable()


class Moves(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.embed, self.out, self.how = nn.Embedding(P + 1, 4), nn.Linear(4, P), how

    def forward(self, tokens):
        h = self.embed(tokens)
        if self.how == "batch_index":
            h = h[0:1] + h
        elif self.how == "batch_softmax":
            h = h.softmax(dim=0)
        elif self.how == "mixed_einsum":
            h = torch.einsum("ntd,msd->nsd", h, h)
        return self.out(h[:, -1])


@pytest.mark.parametrize("how,says", [("batch_index", "batch"), ("batch_softmax", "batch"),
                                      ("mixed_einsum", "batch dimension")])
def test_operations_that_would_mix_samples_are_refused_with_a_reason(how, says):
    problem = problem_of(Moves(how))
    a, b = problem.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    assert problem.segment_bounds(a[None], b[None]) is None
    assert says in problem.bounds_unavailable()


BLOCKS = ["heads", "fused", "causal", "sdpa", "mha", "norm", "relu_mlp", "gelu_mlp"]


class Composed(nn.Module):
    def __init__(self, blocks, d=4):
        super().__init__()
        self.embed, self.pos = nn.Embedding(P + 1, d), nn.Parameter(torch.randn(3, d))
        make = {"heads": lambda: Heads(d, 2), "fused": lambda: Fused(d, 2), "causal": lambda: Fused(d, 1, True),
                "sdpa": lambda: Sdpa(d, 2), "mha": lambda: Torchs(d, 2), "norm": lambda: nn.LayerNorm(d),
                "relu_mlp": lambda: nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, d)),
                "gelu_mlp": lambda: nn.Sequential(nn.Linear(d, 8), nn.GELU(), nn.Linear(8, d))}
        self.blocks, self.kinds = nn.ModuleList(make[k]() for k in blocks), blocks
        self.out = nn.Linear(d, P)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos
        for kind, block in zip(self.kinds, self.blocks):
            x = block(x) if kind == "norm" else x + block(x)
        return self.out(x)[:, -1]


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=3), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.5, 1.0, 2.0]))
def test_random_compositions_hold_100k_points_and_are_never_proven_below_their_peak(blocks, seed, scale):
    torch.manual_seed(seed)
    net = Composed(blocks)
    problem = problem_of(net)
    a, b = problem.init(torch.Generator().manual_seed(seed), n=2, dtype=torch.float64) * scale
    _, worst = check_pieces(net, problem, a, b, [0.0, 0.37, 0.5, 1.0])
    assert prove_below(problem, torch.stack([a, b]), float(worst.max()) * (1 - 1e-9), budget=100).status \
        != "proven"
