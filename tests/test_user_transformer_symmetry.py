"""The symmetry of users' own transformers (the six of tests/test_user_transformers.py: nanoGPT with arange positions
and a fused ``c_attn``, ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` with batch_first=False, LLaMA
with RMSNorm and SwiGLU, a ViT with a cls token and einsum), found by running the forward
(:mod:`landscape.symmetries.user_transformer`).

Ground truths: the group sizes (d = 4 stream dimensions, 2·d MLP units, H·d_head = 4 query/key and value dimensions
in H = 2 heads), which admit rescaling (ReLU MLP units, a stream without norms, heads; not GELU, SiLU, SwiGLU, a
LayerNorm/RMSNorm stream); every element of the derived group keeps the module's outputs in float64; a moved copy
comes back; weight matching by permutations and orthogonal maps cannot lengthen the distance to a; structures that
break a symmetry (a table varying across a head's dimensions, a stream scaled by a fixed non-uniform vector, a bias
shared between the stream and the queries) lose exactly the groups they break.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_proof_attention import no_fused_attention, problem_of  # noqa: F401 (an autouse fixture)
from test_transformer_symmetry import outputs
from test_user_transformers import MODELS, _trained
from torch import nn

import landscape
from landscape import LandscapeError
from landscape.symmetries import orthogonal

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning",
                                        "ignore:enable_nested_tensor:UserWarning")

ATTN = {"qk": (4, 1.0), "vo": (4, 1.0)}
#: name -> ({group: (size, degree)}, attention prefixes, stream admits only permutations)
EXPECTED = {
    "gpt-arange-positions": ({"resid": (4, None), "fc": (8, None)}, ["c_attn"], True),
    "seq-first-encoder-layer": ({"resid": (4, None), "layer.linear1": (8, 1.0)}, ["mha", "layer.self_attn"], True),
    "seq-first-multihead": ({"resid": (4, 1.0)}, ["mha"], False),
    "llama-rmsnorm-swiglu": ({"resid": (4, None), "w1": (8, None)}, ["wk+wq"], True),
    # rotary positions turn each pair of a head's dimensions by its own angle: no rotation or permutation inside a
    # head keeps the scores, so the attention groups are dropped (and said so in sym.skipped)
    "llama-written-rmsnorm-rotary": ({"resid": (4, None), "w1": (8, None)}, [], True),
    "vit-cls-expand-einsum": ({"resid": (4, 1.0), "mlp.0": (8, None)}, ["qkv"], False),
}


def generic(problem, seed):
    """A point with no zero entry (raw ``nn.Parameter``s are initialised to zero by ``problem.init``)."""
    return torch.randn(problem.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / 2


@pytest.mark.parametrize("name", sorted(MODELS))
def test_groups_of_each_user_transformer(name):
    torch.manual_seed(0)
    problem = problem_of(MODELS[name]().eval())
    sym = landscape.symmetry(problem)
    groups, attention, permutations_only = EXPECTED[name]
    expected = dict(groups, **{f"{a}.attn.{k}": v for a in attention for k, v in ATTN.items()})
    assert {g.name: (g.size, g.degree) for g in sym.groups} == expected
    assert sym.layer_norm == permutations_only
    if attention:
        assert (sym.heads, sym.d_head) == (2, 2)
    else:
        assert any(reason.startswith("attention") for reason in sym.skipped)
    shapes = dict(zip(sym.layout.names, sym.layout.shapes))
    assert sym.layout.dim == problem.dim and all(shapes[a.name][a.axis] == g.size for g in sym.groups for a in g.axes)


def test_a_fused_qkv_is_split_into_its_query_key_and_value_rows():
    problem = problem_of(MODELS["gpt-arange-positions"]().eval())
    sym = landscape.symmetry(problem)
    axes = {g.name: {(a.name, a.axis, a.role) for a in g.axes} for g in sym.groups}
    assert axes["c_attn.attn.qk"] == {("c_attn.weight[0:4]", 0, "head"), ("c_attn.bias[0:4]", 0, "head"),
                                      ("c_attn.weight[4:8]", 0, "tail"), ("c_attn.bias[4:8]", 0, "tail")}
    assert axes["c_attn.attn.vo"] == {("c_attn.weight[8:12]", 0, "head"), ("c_attn.bias[8:12]", 0, "head"),
                                      ("c_proj.weight", 1, "tail")}
    resid = {n for n, _, _ in axes["resid"]}
    assert {"wte.weight", "wpe.weight", "ln1.weight", "ln2.bias", "c_attn.weight[8:12]", "c_proj.bias",
            "fc.weight", "proj.bias", "head.weight"} <= resid
    assert "head.bias" not in resid  # the output's units are the outputs: fixed
    assert not any(n.startswith("head") for g in sym.groups[1:] for n, _, _ in axes[g.name])


class Lens(nn.Module):
    """TransformerLens' way (and the grokking analyses'): W_Q, W_K, W_V of shape [H, d, d_head], W_O [H, d_head, d],
    ``einsum``, ``W_E[tokens]`` indexed directly, ``x @ W_in + b_in``: heads are an axis of the weights."""

    def __init__(self, d=8, heads=2, d_head=4):
        super().__init__()
        self.W_E, self.W_pos = nn.Parameter(torch.randn(4, d) / 2), nn.Parameter(torch.randn(3, d) / 2)
        self.W_Q, self.W_K, self.W_V = (nn.Parameter(torch.randn(heads, d, d_head) / 2) for _ in range(3))
        self.W_O = nn.Parameter(torch.randn(heads, d_head, d) / 2)
        self.W_in, self.b_in = nn.Parameter(torch.randn(d, 16) / 2), nn.Parameter(torch.zeros(16))
        self.W_out, self.W_U = nn.Parameter(torch.randn(16, d) / 2), nn.Parameter(torch.randn(d, 3) / 2)

    def forward(self, tok):
        x = self.W_E[tok] + self.W_pos
        q, k, v = (torch.einsum("bpd,hdk->bhpk", x, w) for w in (self.W_Q, self.W_K, self.W_V))
        z = torch.softmax(q @ k.transpose(-1, -2) / 2, -1) @ v
        x = x + torch.einsum("bhpk,hkd->bpd", z, self.W_O)
        x = x + torch.relu(x @ self.W_in + self.b_in) @ self.W_out
        return (x @ self.W_U)[:, -1]


def test_heads_as_an_axis_of_the_weights_are_permuted_and_their_dimensions_shared():
    """With [H, d, d_head] weights a head's dimensions are not rows of one axis: what is derived is the stream
    (orthogonal, no norm), the heads permuted as wholes, the query/key and value/output dimensions permuted and
    rescaled alike in every head, the ReLU units; all of it keeps the outputs and a moved copy comes back."""
    problem = problem_of(Lens().eval())
    sym = landscape.symmetry(problem)
    groups = {g.name: (g.size, g.degree, {(a.name, a.axis) for a in g.axes}) for g in sym.groups}
    assert groups["W_K"] == (2, None, {("W_Q", 0), ("W_K", 0), ("W_V", 0), ("W_O", 0)})
    assert groups["W_K.axis2"] == (4, 1.0, {("W_Q", 2), ("W_K", 2)})
    assert groups["W_O"] == (4, 1.0, {("W_V", 2), ("W_O", 1)})
    assert groups["W_in"][:2] == (16, 1.0) and groups["resid"][:2] == (8, 1.0) and not sym.layer_norm
    theta = generic(problem, 2)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(0), rescale=True)
    for moved in (sym.transform(theta, perms, scales), sym.transform(theta, orthogonal.random_element(sym))):
        torch.testing.assert_close(outputs(problem, moved), outputs(problem, theta), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(landscape.align(problem, theta, moved).theta, theta, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("params", [{}, {"layer_norm": True, "layers": 2, "activation": "gelu"}])
def test_on_the_built_in_transformer_running_it_finds_the_hand_written_symmetry(params):
    """The built-in transformer's symmetry is written out by hand (symmetries/transformer.py); the derivation from
    its forward, never told it is a transformer, finds the same groups over the same tensors."""
    from landscape.symmetries.user_transformer import user_symmetry

    problem = landscape.make_problem("modadd_transformer", p=7, d_model=8, heads=2, d_mlp=16, **params)
    written, found = landscape.symmetry(problem), user_symmetry(problem, problem.module())
    assert (found.heads, found.d_head, found.layer_norm) == (written.heads, written.d_head, written.layer_norm)

    def groups(sym, rename=lambda n: n):
        return {rename(g.name): (g.size, g.degree, {(a.name, a.axis) for a in g.axes}) for g in sym.groups}

    assert groups(found, lambda n: n.replace(".fc1", ".mlp")) == groups(written)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_element_keeps_the_function_and_a_moved_copy_comes_back(name):
    torch.manual_seed(0)
    problem = problem_of(MODELS[name]().eval())
    sym = landscape.symmetry(problem)
    theta = generic(problem, 7)
    reference = outputs(problem, theta)
    for seed in range(2):
        perms, scales = sym.random(generator=torch.Generator().manual_seed(seed), rescale=True)
        continuous = orthogonal.random_element(sym, generator=torch.Generator().manual_seed(10 + seed))
        for moved in (sym.transform(theta, perms, scales), sym.transform(theta, continuous)):
            assert float((moved - theta).norm()) > 0.5
            torch.testing.assert_close(outputs(problem, moved), reference, rtol=1e-10, atol=1e-10)
            back = landscape.align(problem, theta, moved)
            torch.testing.assert_close(back.theta, theta, rtol=1e-8, atol=1e-8)
            assert landscape.barrier(problem, theta, back.theta) <= 1e-8
        torch.testing.assert_close(sym.transform(sym.transform(theta, perms, scales), *sym.inverse(perms, scales)),
                                   theta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt-arange-positions", "llama-rmsnorm-swiglu"])
def test_two_trained_seeds_aligned_keep_bs_function_and_come_no_farther(name):
    make = MODELS[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nets = [_trained(make, seed, steps=150) for seed in (0, 1)]
    finally:
        torch.set_num_threads(threads)
    problem = problem_of(nets[0])
    a, b = (torch.nn.utils.parameters_to_vector(n.parameters()).double().detach() for n in nets)
    for rescale in (False, True):
        result = landscape.align(problem, a, b, rescale=rescale)
        torch.testing.assert_close(outputs(problem, result.theta), outputs(problem, b), rtol=1e-9, atol=1e-9)
        if not rescale:  # permutations and orthogonal maps keep ‖b‖; the identity is where the search starts
            assert result.distance_after <= result.distance_before + 1e-12
    assert result.info["method"]["groups"]["resid"].startswith("permutation")  # a LayerNorm/RMSNorm stream


class Probe(nn.Module):
    """One pre-norm block written by hand (separate q, k, v, out; a GELU MLP), with one symmetry broken on demand:
    ``table``: the queries multiplied by a fixed table that differs across a head's dimensions (as rotary tables
    do); ``gain``: the stream multiplied by a fixed non-uniform vector; ``shared``: the output projection's bias also
    added to the queries."""

    def __init__(self, table=False, gain=False, shared=False, d=4, heads=2):
        super().__init__()
        self.embed, self.ln = nn.Embedding(4, d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.fc, self.proj, self.head = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), nn.Linear(d, 3)
        self.register_buffer("table", torch.linspace(0.5, 2.0, d // heads) if table else torch.ones(d // heads))
        self.register_buffer("gain", torch.linspace(0.5, 2.0, d) if gain else torch.ones(d))
        self.h, self.shared = heads, shared

    def forward(self, tok):
        x = self.embed(tok) * self.gain
        B, T, C = x.shape
        h = self.ln(x)
        q = self.q(h) + (self.out.bias if self.shared else 0)
        q, k, v = (z.view(B, T, self.h, -1).transpose(1, 2) for z in (q, self.k(h), self.v(h)))
        att = torch.softmax(q * self.table @ k.transpose(-2, -1) / math.sqrt(C // self.h), -1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(B, T, C))
        x = x + self.proj(torch.nn.functional.gelu(self.fc(self.ln(x))))
        return self.head(x)[:, -1]


@pytest.mark.parametrize("broken, lost", [({}, set()), ({"table": True}, {"attn.qk", "attn.vo"}),
                                          ({"gain": True}, {"resid"}), ({"shared": True}, {"resid", "attn.qk"})])
def test_a_structure_that_breaks_a_symmetry_loses_that_group(broken, lost):
    torch.manual_seed(0)
    problem = problem_of(Probe(**broken).eval())
    sym = landscape.symmetry(problem)
    everything = {"resid", "fc", "attn.qk", "attn.vo"}
    kept = {("attn." + g.name.rsplit(".attn.", 1)[1]) if ".attn." in g.name else g.name for g in sym.groups}
    assert kept & lost == set() and kept >= everything - lost - ({"attn.vo"} if "attn.qk" in lost else set())
    theta = generic(problem, 3)
    perms, scales = sym.random(generator=torch.Generator().manual_seed(1), rescale=True)
    moved = sym.transform(sym.transform(theta, perms, scales), orthogonal.random_element(sym))
    torch.testing.assert_close(outputs(problem, moved), outputs(problem, theta), rtol=1e-10, atol=1e-10)


def test_queries_moved_without_their_keys_change_the_function():
    """The coupling the qk group carries is needed: the same head permutation on the query rows of the fused
    ``c_attn`` alone (keys left) changes the outputs; on queries, keys, values and the output columns it does not."""
    problem = problem_of(MODELS["gpt-arange-positions"]().eval())
    sym = landscape.symmetry(problem)
    theta = generic(problem, 5)
    swap = torch.tensor([2, 3, 0, 1])  # head 0 <-> head 1
    both = sym.transform(theta, {"c_attn.attn.qk": swap, "c_attn.attn.vo": swap})
    torch.testing.assert_close(outputs(problem, both), outputs(problem, theta), rtol=1e-10, atol=1e-10)
    queries = theta.clone()
    w = problem.layout.unflatten(queries)["c_attn.weight"]
    w[:4] = w[:4][swap].clone()
    assert float((outputs(problem, queries) - outputs(problem, theta)).abs().max()) > 1e-3


def test_a_user_transformer_refuses_activation_matching_in_one_line():
    problem = problem_of(MODELS["gpt-arange-positions"]().eval())
    a, b = generic(problem, 1), generic(problem, 2)
    with pytest.raises(LandscapeError, match="weight matching") as err:
        landscape.align(problem, a, b, method="activation")
    assert "\n" not in str(err.value)
