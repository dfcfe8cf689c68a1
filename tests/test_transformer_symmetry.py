"""The symmetry of the built-in transformer: its groups, its elements keep the function, weight matching recovers a
permuted copy of a trained transformer exactly.

Ground truths: the group sizes (d_model, H·d_head twice, d_mlp per block); a permuted (and, without weight decay,
rescaled) copy computes the same outputs in float64; the inverse element; the same head permutation on queries
and keys but not on values moves a head's pattern onto another head's values: another function (the coupling is
needed); aligning the copy back gives the original parameters and a straight path of no barrier.
"""

import copy

import pytest
import torch

import landscape
from landscape import LandscapeError

SMALL = {"p": 7, "d_model": 8, "heads": 2, "d_mlp": 16}


def outputs(problem, theta):
    """The module's own outputs at θ, in float64."""
    module = copy.deepcopy(problem.module()).double()
    with torch.no_grad():
        for name, value in problem.layout.unflatten(theta.double()).items():
            module.get_parameter(name).copy_(value)
        return module(problem.data("train")[0])


def _two_seeds(**params):
    """Two seeds of the small transformer, 300 Adam steps on one thread, in float64."""
    problem = landscape.make_problem("modadd_transformer", **SMALL, train_fraction=0.6, **params)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        thetas = landscape.train(problem, seeds=[0, 1], steps=300, lr=0.01, polish_steps=0).thetas
    finally:
        torch.set_num_threads(threads)
    return problem, thetas.double()


@pytest.fixture(scope="module")
def trained():
    return _two_seeds(layers=2, layer_norm=True)


@pytest.mark.parametrize("params, degrees", [({}, [1.0, 1.0, 1.0, 1.0]),
                                             ({"layer_norm": True, "activation": "gelu"}, [None, 1.0, 1.0, None])])
def test_groups(params, degrees):
    sym = landscape.symmetry(landscape.make_problem("modadd_transformer", **SMALL, **params))
    assert [(g.name, g.size) for g in sym.groups] == [("resid", 8), ("blocks.0.attn.qk", 8), ("blocks.0.attn.vo", 8),
                                                      ("blocks.0.mlp", 16)]
    assert [g.degree for g in sym.groups] == degrees  # LayerNorm: no rescaling of the stream; GELU: none of the MLP
    shapes = dict(zip(sym.layout.names, sym.layout.shapes))
    assert all(shapes[a.name][a.axis] == g.size for g in sym.groups for a in g.axes)
    resid = {a.name for a in sym.groups[0].axes}
    assert {"embed.weight", "pos", "blocks.0.attn.q.weight", "blocks.0.fc2.bias", "unembed.weight"} <= resid
    assert ("ln_f.weight" in resid) == bool(params)


@pytest.mark.parametrize("params", [{}, {"layer_norm": True, "layers": 2, "activation": "gelu", "weight_decay": 1e-3}])
def test_every_element_keeps_the_function(params):
    problem = landscape.make_problem("modadd_transformer", **SMALL, **params)
    sym = landscape.symmetry(problem)
    theta = problem.init(torch.Generator().manual_seed(5), dtype=torch.float64)
    for seed in range(3):
        perms, scales = sym.random(generator=torch.Generator().manual_seed(seed), rescale=problem.weight_decay == 0)
        assert all(sym.head_permutation(perms[g.name]) is not None for g in sym.groups if ".attn." in g.name)
        moved = sym.transform(theta, perms, scales)
        assert float((moved - theta).norm()) > 1
        torch.testing.assert_close(outputs(problem, moved), outputs(problem, theta), rtol=1e-10, atol=1e-10)
        assert float(problem.loss(moved)) == pytest.approx(float(problem.loss(theta)), rel=1e-12)
        torch.testing.assert_close(sym.transform(moved, *sym.inverse(perms, scales)), theta, rtol=1e-12, atol=1e-12)


def test_moving_a_head_on_queries_and_keys_alone_changes_the_function():
    problem = landscape.make_problem("modadd_transformer", **SMALL)
    sym = landscape.symmetry(problem)
    theta = problem.init(torch.Generator().manual_seed(5), dtype=torch.float64)
    swap = torch.cat([torch.arange(4, 8), torch.arange(4)])  # head 0 <-> head 1
    assert sym.head_permutation(swap).tolist() == [1, 0]
    both = sym.permute(theta, {"blocks.0.attn.qk": swap, "blocks.0.attn.vo": swap})
    torch.testing.assert_close(outputs(problem, both), outputs(problem, theta), rtol=1e-10, atol=1e-10)
    alone = sym.permute(theta, {"blocks.0.attn.qk": swap})
    assert float((outputs(problem, alone) - outputs(problem, theta)).abs().max()) > 1e-3
    assert sym.head_permutation(torch.tensor([0, 4, 1, 2, 3, 5, 6, 7])) is None  # a head's dims split: not coupled


def test_a_permuted_and_rescaled_copy_of_a_trained_transformer_comes_back_exactly(trained):
    problem, thetas = trained
    a = thetas[0]
    sym = landscape.symmetry(problem)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(11), rescale=True)  # no weight decay
    assert set(scales) == {"blocks.0.attn.qk", "blocks.0.attn.vo", "blocks.0.mlp", "blocks.1.attn.qk",
                           "blocks.1.attn.vo", "blocks.1.mlp"}  # LayerNorm: the stream is not rescaled
    b = sym.transform(a, perms, scales)
    assert float((b - a).norm()) > 0.5 * float(a.norm())
    result = landscape.align(problem, a, b)
    torch.testing.assert_close(result.theta, a, rtol=0, atol=1e-12)
    assert landscape.barrier(problem, a, result.theta) == pytest.approx(0.0, abs=1e-9)
    assert landscape.barrier(problem, a, b) > 1e-2  # the copy, unaligned, sits across a barrier
    # two different seeds: matching moves b toward a, never away (the identity is a candidate)
    other = landscape.align(problem, a, thetas[1])
    assert other.distance_after <= other.distance_before
    torch.testing.assert_close(outputs(problem, other.theta), outputs(problem, thetas[1]), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ the continuous (orthogonal) groups
@pytest.fixture(scope="module")
def trained_plain():
    """Two seeds of the transformer without LayerNorm (whose residual stream turns by any orthogonal map)."""
    return _two_seeds()


def orthogonality(matrix):
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype)
    return float((matrix @ matrix.T - eye).abs().max())


@pytest.mark.parametrize("fixture", ["trained_plain", "trained"])
def test_a_rotated_copy_comes_back_exactly(fixture, request):
    """A copy moved by a random orthogonal map of the stream (a permutation with LayerNorm), random rotations inside
    each head, permuted heads and MLP units, rescaled MLP units: the same function; aligned back to a to 1e-8."""
    from landscape.symmetries import orthogonal

    problem, thetas = request.getfixturevalue(fixture)
    a, norm = thetas[0], fixture == "trained"
    sym = landscape.symmetry(problem)
    maps = orthogonal.random_element(sym, generator=torch.Generator().manual_seed(4))
    assert orthogonal.is_matrix(maps["resid"]) != norm  # LayerNorm: only permutations of the stream are exact
    assert orthogonality(maps["blocks.0.attn.qk"]) < 1e-12 and orthogonality(maps["blocks.0.attn.vo"]) < 1e-12
    scales = {"blocks.0.mlp": torch.exp(torch.rand(16, generator=torch.Generator().manual_seed(1),
                                                   dtype=torch.float64) * 2 - 1)}
    b = sym.transform(a, maps, scales)
    assert float((b - a).norm()) > 0.5 * float(a.norm())
    torch.testing.assert_close(outputs(problem, b), outputs(problem, a), rtol=1e-10, atol=1e-10)
    assert landscape.barrier(problem, a, b) > 1e-2
    back = sym.transform(b, *sym.inverse(maps, scales))
    torch.testing.assert_close(back, a, rtol=0, atol=1e-10)
    result = landscape.align(problem, a, b)
    torch.testing.assert_close(result.theta, a, rtol=0, atol=1e-8)
    assert landscape.barrier(problem, a, result.theta) == pytest.approx(0.0, abs=1e-9)
    groups = result.info["method"]["groups"]
    assert groups["resid"].startswith("permutation" if norm else "orthogonal O(8)")
    assert groups["blocks.0.attn.qk"] == "2 heads permuted, orthogonal O(4) inside each"
    assert result.moved_units["resid"] > 0


def test_orthogonal_alignment_of_two_seeds_keeps_the_function_and_moves_closer(trained_plain):
    problem, thetas = trained_plain
    sym = landscape.symmetry(problem)
    for rescale in (False, True):  # True: both balanced under the invertible maps first, then matched
        result = landscape.align(problem, thetas[0], thetas[1], rescale=rescale)
        torch.testing.assert_close(outputs(problem, result.theta), outputs(problem, thetas[1]), rtol=1e-9, atol=1e-9)
        objective = result.info["method"]["objective"]
        assert objective["after"][0] >= objective["before"][0]  # coordinate ascent from the identity
    plain = landscape.align(problem, thetas[0], thetas[1], rescale=False)
    for name in ("resid", "blocks.0.attn.qk", "blocks.0.attn.vo"):
        assert orthogonality(plain.permutations[name]) < 1e-9
    assert plain.permutations["blocks.0.mlp"].dtype == torch.long
    sym.matching = "permutation"
    try:
        permuted = landscape.align(problem, thetas[0], thetas[1], rescale=False)
    finally:
        sym.matching = "orthogonal"
    assert permuted.info["method"]["groups"]["resid"].startswith("permutation")
    assert plain.distance_after < permuted.distance_after <= permuted.distance_before  # a larger group


# ------------------------------------------------------------------ activation matching
@pytest.mark.parametrize("fixture", ["trained_plain", "trained"])
def test_activation_matching_brings_a_rotated_copy_back_exactly(fixture, request):
    """The copy's hidden values are a's moved by the element: matching them finds its inverse, to 1e-8."""
    from landscape.symmetries import orthogonal

    problem, thetas = request.getfixturevalue(fixture)
    a = thetas[0]
    sym = landscape.symmetry(problem)
    b = sym.transform(a, orthogonal.random_element(sym, generator=torch.Generator().manual_seed(5)))
    assert landscape.barrier(problem, a, b) > 1e-2
    result = landscape.align(problem, a, b, method="activation")
    torch.testing.assert_close(result.theta, a, rtol=0, atol=1e-8)
    assert landscape.barrier(problem, a, result.theta) == pytest.approx(0.0, abs=1e-9)
    corr = result.info["method"]["correlation"]
    for name in ("resid", "blocks.0.attn.qk", "blocks.0.attn.vo", "blocks.0.mlp"):
        assert corr[name]["after"][0] == pytest.approx(1.0, abs=1e-9)  # every unit meets its own copy
        assert corr[name]["before"][0] < 0.9
    assert result.info["method"]["groups"]["resid"].startswith("permutation" if fixture == "trained" else "orthogonal")


def test_activation_matching_over_permutations_brings_a_permuted_copy_back(trained_plain):
    problem, thetas = trained_plain
    a = thetas[0]
    sym = landscape.symmetry(problem)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(12), rescale=True)
    b = sym.transform(a, perms, scales)
    sym.matching = "permutation"
    try:
        result = landscape.align(problem, a, b, method="activation")
    finally:
        sym.matching = "orthogonal"
    assert all(p.dtype == torch.long for p in result.permutations.values())
    torch.testing.assert_close(result.theta, a, rtol=0, atol=1e-9)


def test_activation_matching_of_two_seeds_keeps_the_function(trained_plain):
    problem, thetas = trained_plain
    result = landscape.align(problem, thetas[0], thetas[1], method="activation")
    torch.testing.assert_close(outputs(problem, result.theta), outputs(problem, thetas[1]), rtol=1e-9, atol=1e-9)
    mlp = result.info["method"]["correlation"]["blocks.0.mlp"]
    assert mlp["after"][0] >= mlp["before"][0]  # the best assignment of correlations: the identity is a candidate
    assert result.info["method"]["samples"] == problem.n_samples("train")

