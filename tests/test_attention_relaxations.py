"""Each relaxation of attention networks holds every value it can take on its piece (float64, ≥ 100,000 s a case).

A value v(s) = c + s·v_s + e(s) with |e(s)| ≤ r is built as an explicit function of s (the remainder an
oscillation that reaches ±r), the operation is run exactly on it at 100,001 points of s ∈ [−1, 1], and every
result must lie within the relaxation's output model: |f(v(s)) − (o_c + s·o_s)| ≤ o_r. Sharp cases put a
softmax's switch inside the piece, between any two grid points of a coarse check.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape.problems import attention_bounds as ab
from landscape.problems.relaxed import Model

S = torch.linspace(-1, 1, 100_001, dtype=torch.float64)


def model(shape, g, *, scale=1.0, slope=1.0, rem=0.1, exact=False):
    """A random Model and the function e ↦ its value at each s of S (shape [len(S), *shape])."""
    c = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    v = torch.randn(shape, generator=g, dtype=torch.float64) * slope
    r = None if exact else torch.rand(shape, generator=g, dtype=torch.float64) * rem
    freq = torch.rand(shape, generator=g, dtype=torch.float64) * 20
    phase = torch.rand(shape, generator=g, dtype=torch.float64) * 6.3

    def at(s):
        s = s.reshape(-1, *([1] * len(shape)))
        e = 0 if r is None else r * torch.sin(freq * s + phase).clamp(-1, 1)
        return c + s * v + e
    return Model(c, v, r), at


def assert_holds(out: Model, exact: torch.Tensor, s=S):
    oc, os_, orem = out.full()
    s = s.reshape(-1, *([1] * oc.dim()))
    err = (exact - (oc + s * os_)).abs() - orem
    tol = 1e-9 * exact.abs() + 1e-12
    assert bool(torch.isfinite(oc).all()) and bool((err <= tol).all()), float((err - tol).max())


def chunks(fn, *ats, size=20_001):
    """fn on the values at every s of S, in chunks (each [k, *shape])."""
    return torch.cat([fn(*(at(s) for at in ats)) for s in S.split(size)])


@pytest.mark.parametrize("seed", range(2))
def test_a_product_of_two_values_holds_everywhere(seed):
    g = torch.Generator().manual_seed(seed)
    a, fa = model((2, 2, 3, 4), g)
    b, fb = model((2, 2, 4, 3), g)
    assert_holds(ab.bilinear(a, b, torch.matmul), chunks(torch.matmul, fa, fb))
    c, fc = model((2, 2, 3, 4), g, exact=True)
    assert_holds(ab.bilinear(a, c, torch.mul), chunks(torch.mul, fa, fc))
    eq = "bhqd,bhkd->bhqk"
    assert_holds(ab.bilinear(a, c, lambda u, w: torch.einsum(eq, u, w)),
                 chunks(lambda u, w: torch.einsum("tbhqd,tbhkd->tbhqk", u, w), fa, fc))


def test_a_product_is_exact_for_affine_operands_and_its_remainder_shrinks_quadratically():
    g = torch.Generator().manual_seed(0)
    a, fa = model((2, 3, 4), g, exact=True)
    b, fb = model((2, 4, 3), g, exact=True)
    out = ab.bilinear(a, b, torch.matmul)
    assert_holds(out, chunks(torch.matmul, fa, fb))
    q = torch.matmul(a.s_, b.s_)
    assert torch.allclose(out.r, q.abs() / 2)  # only the s² term: exactly half its size
    small = ab.bilinear(Model(a.c, a.s_ / 100), Model(b.c, b.s_ / 100), torch.matmul)
    assert torch.allclose(small.r, out.r / 1e4)


@pytest.mark.parametrize("scale,slope", [(1.0, 0.1), (1.0, 1.0), (3.0, 0.01), (0.1, 30.0), (10.0, 5.0)])
def test_softmax_holds_everywhere_smooth_or_switching_inside_the_piece(scale, slope):
    g = torch.Generator().manual_seed(int(10 * scale + slope))
    z, fz = model((6, 2, 5), g, scale=scale, slope=slope, rem=0.01 * slope)
    for dim in (-1, 1):
        assert_holds(ab.softmax(z, dim), chunks(lambda t: torch.softmax(t, dim + (dim > 0)), fz))


def test_softmax_is_second_order_in_the_piece_where_no_switch_happens():
    g = torch.Generator().manual_seed(3)
    c = torch.randn(4, 6, generator=g, dtype=torch.float64)
    v = torch.randn(4, 6, generator=g, dtype=torch.float64)
    widths = [float(ab.softmax(Model(c, v * h), -1).r.max()) for h in (1e-2, 1e-3)]
    assert widths[1] < widths[0] / 50  # ~ h²: 100 times smaller for a 10 times shorter piece


def test_a_sharp_switch_between_grid_points_is_inside_the_bound():
    """Two scores cross at s = 1/3 with slope 10⁵: the softmax goes from one token to the other within ~1e-5,
    between the points of a 1,000-point grid; the interval bound covers both sides."""
    c = torch.tensor([[-1e5 / 3, 0.0, -2.0]], dtype=torch.float64)
    v = torch.tensor([[1e5, 0.0, 0.0]], dtype=torch.float64)
    out = ab.softmax(Model(c, v), -1)
    exact = torch.softmax(c + S[:, None, None] * v, -1)
    assert_holds(out, exact)
    lo, hi = out.c - out.s_.abs() - out.r, out.c + out.s_.abs() + out.r
    assert float(lo[0, 1]) <= float(exact[:, 0, 1].min()) and float(hi[0, 1]) >= 0.88 - 1e-9


def test_masked_entries_are_zero_and_take_no_part():
    g = torch.Generator().manual_seed(5)
    z, fz = model((4, 5, 5), g, slope=0.5, rem=0.02)
    mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
    filled = ab.masked_fill(z, mask, -math.inf)
    out = ab.softmax(filled, -1)
    assert_holds(out, chunks(lambda t: torch.softmax(t.masked_fill(mask, -math.inf), -1), fz))
    assert bool((out.c[..., mask] == 0).all()) and bool((out.r[..., mask] == 0).all())
    assert torch.equal(out.c[:, 0, 0], torch.ones(4, dtype=torch.float64)) and bool((out.r[:, 0, 0] == 0).all())


@pytest.mark.parametrize("spread", [0.05, 1.0, 5.0])
def test_layer_norm_holds_everywhere(spread):
    g = torch.Generator().manual_seed(int(spread * 10))
    x, fx = model((3, 2, 6), g, slope=spread, rem=0.05 * spread)
    assert_holds(ab.layer_norm(x, 1, 1e-5), chunks(lambda t: F.layer_norm(t, (6,), eps=1e-5), fx))
    assert_holds(ab.layer_norm(x, 2, 1e-5), chunks(lambda t: F.layer_norm(t, (2, 6), eps=1e-5), fx))


def test_layer_norm_tightens_quadratically():
    g = torch.Generator().manual_seed(0)
    c, v = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    widths = [float(ab.layer_norm(Model(c, v * h), 1, 1e-5).r.max()) for h in (1e-2, 1e-3)]
    assert widths[1] < widths[0] / 50


def test_rsqrt_holds_down_to_zero_variance():
    s = S.reshape(-1, 1)
    c = torch.tensor([0.0, 1e-6, 0.5, 2.0], dtype=torch.float64)
    v = torch.tensor([0.0, 1e-6, 0.4, 1.0], dtype=torch.float64)
    exact = (c + s * v).clamp_min(0)  # a variance is never below 0: the model's lower end is clamped
    assert_holds(ab.rsqrt(Model(c, v), 1e-5), (exact + 1e-5).rsqrt())


@pytest.mark.parametrize("exponent", [-1.0, 0.5, -0.5])
def test_powers_hold_everywhere_on_one_side_of_zero_and_give_no_bound_across_it(exponent):
    c = torch.tensor([0.3, 2.0, 5.0, -1.0, 0.05], dtype=torch.float64)
    v = torch.tensor([0.2, 1.5, 0.1, 0.5, 0.1], dtype=torch.float64)
    out = ab.power(Model(c, v), exponent)
    fine = slice(0, 3) if exponent != -1 else slice(0, 4)  # roots: positive pieces only; 1/x: either side
    exact = (c + S[:, None] * v)[:, fine].pow(exponent)
    assert_holds(Model(out.c[fine], out.s_[fine], out.r[fine]), exact)
    assert bool(torch.isinf(out.r[-1]))  # the piece reaches 0: no bound
    if exponent != -1:
        assert bool(torch.isinf(out.r[3]))


@pytest.mark.parametrize("spread", [0.3, 3.0])
def test_tanh_gelu_holds_everywhere_and_its_slope_peaks_where_its_derivative_vanishes(spread):
    g = torch.Generator().manual_seed(int(spread * 10))
    z, fz = model((4, 50), g, scale=3.0, slope=spread, rem=0.1)
    assert_holds(Model(*ab.GELU_TANH(*z.full())), chunks(lambda t: F.gelu(t, approximate="tanh"), fz))
    peak = torch.tensor(ab._PEAK, dtype=torch.float64)
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    assert float(ab._gelu_tanh_slope(grid).max()) <= float(ab._gelu_tanh_slope(peak)) + 1e-15
    assert float(ab._gelu_tanh_slope(grid).min()) >= float(ab._gelu_tanh_slope(-peak)) - 1e-15


def test_an_embedding_lookup_is_exact():
    g = torch.Generator().manual_seed(1)
    wc, wh = torch.randn(2, 7, 3, generator=g, dtype=torch.float64), torch.randn(2, 7, 3, generator=g,
                                                                               dtype=torch.float64)
    idx = torch.randint(0, 7, (4, 3), generator=g)
    out = ab.embedding(Model(idx.repeat(2, 1)), wc, wh, 4)
    assert out.r is None and torch.equal(out.c.reshape(2, 4, 3, 3), torch.stack([wc[0][idx], wc[1][idx]]))
    assert torch.equal(out.s_.reshape(2, 4, 3, 3), torch.stack([wh[0][idx], wh[1][idx]]))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), length=st.integers(2, 5), steps=st.lists(
    st.sampled_from(["softmax", "norm", "product", "mask"]), min_size=1, max_size=4))
def test_random_chains_of_attention_relaxations_hold_everywhere(seed, length, steps):
    g = torch.Generator().manual_seed(seed)
    x, fx = model((2, length, length), g, slope=float(torch.rand(1, generator=g)) * 4, rem=0.02)
    w, fw = model((2, length, length), g, slope=0.3, rem=0.01)
    mask = torch.rand(length, length, generator=g) < 0.3
    mask[:, 0] = False  # no row all masked
    exact_ops = {"softmax": lambda t, u: torch.softmax(t, -1), "norm": lambda t, u: F.layer_norm(t, (length,)),
                 "product": lambda t, u: torch.matmul(t, u) / length, "mask": lambda t, u: t.masked_fill(mask, -30.0)}
    bound_ops = {"softmax": lambda m: ab.softmax(m, -1), "norm": lambda m: ab.layer_norm(m, 1, 1e-5),
                 "product": lambda m: ab.bilinear(m, w, torch.matmul).map(lambda t: t / length),
                 "mask": lambda m: ab.masked_fill(m, mask, -30.0)}
    out = x
    for step in steps:
        out = bound_ops[step](out)

    def run(t, u):
        for step in steps:
            t = exact_ops[step](t, u)
        return t
    assert_holds(out, chunks(run, fx, fw))
