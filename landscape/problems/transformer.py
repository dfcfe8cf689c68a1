"""A transformer on modular addition, the task of the grokking papers, built in (no download).

Tokens ``a, b, =`` with a, b in [0, p) are mapped to ``(a + b) mod p``, read from the output at the last
position (Power et al., "Grokking", 2022; Nanda et al., "Progress measures for grokking via mechanistic
interpretability", ICLR 2023). The module is written the standard way (``nn.Embedding``, a learned position
table, ``nn.Linear`` for queries, keys, values and the output, ``q @ kᵀ / √d_head``, ``softmax``, pre-norm
``nn.LayerNorm``, an MLP, a linear unembedding) so that what reads ``forward`` (the bound tracer, the symmetry
of :mod:`landscape.symmetries.transformer`) sees a plain transformer; K of them are evaluated at once by
:func:`.attention.transformer_logits`, checked against this module by the differential check.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._errors import LandscapeError
from .._registry import Registry
from .attention import transformer_logits
from .module import NetworkProblem

#: MLP activations of :func:`modadd_transformer` by name.
TRANSFORMER_ACTIVATIONS = Registry("transformer activation", {"relu": nn.ReLU, "gelu": nn.GELU})


class SelfAttention(nn.Module):
    """Multi-head self-attention without a mask: ``softmax(q kᵀ / √d_head) v`` per head, then a linear output."""

    def __init__(self, d_model: int, heads: int, d_head: int):
        super().__init__()
        self.heads, self.d_head = heads, d_head
        self.q = nn.Linear(d_model, heads * d_head)
        self.k = nn.Linear(d_model, heads * d_head)
        self.v = nn.Linear(d_model, heads * d_head)
        self.out = nn.Linear(heads * d_head, d_model)

    def forward(self, x):  # x [N, T, d_model]
        n, t, _ = x.shape
        q = self.q(x).view(n, t, self.heads, self.d_head).transpose(1, 2)  # [N, H, T, d_head]
        k = self.k(x).view(n, t, self.heads, self.d_head).transpose(1, 2)
        v = self.v(x).view(n, t, self.heads, self.d_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1) / math.sqrt(self.d_head)).softmax(dim=-1)
        z = (att @ v).transpose(1, 2).reshape(n, t, self.heads * self.d_head)
        return self.out(z)


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(ln1(x))``, then ``x + fc2(act(fc1(ln2(x))))``."""

    def __init__(self, d_model: int, heads: int, d_head: int, d_mlp: int, layer_norm: bool, activation: str):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.attn = SelfAttention(d_model, heads, d_head)
        self.ln2 = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.fc1 = nn.Linear(d_model, d_mlp)
        self.act = TRANSFORMER_ACTIVATIONS.lookup(activation)()
        self.fc2 = nn.Linear(d_mlp, d_model)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class Transformer(nn.Module):
    """Token embedding plus learned positions, ``layers`` pre-norm blocks, a final LayerNorm (with ``layer_norm``)
    and a linear unembedding of the last position: tokens [N, T] (long) -> logits [N, classes]."""

    def __init__(self, vocab: int, classes: int, context: int, d_model: int, heads: int, d_mlp: int,
                 layers: int, layer_norm: bool, activation: str):
        super().__init__()
        if d_model % heads:
            raise LandscapeError(f"d_model must be a multiple of heads, got d_model={d_model}, heads={heads}")
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(context, d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads, d_model // heads, d_mlp, layer_norm, activation)
                                    for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.unembed = nn.Linear(d_model, classes)
        self.config = dict(heads=heads, d_head=d_model // heads, layers=layers, layer_norm=layer_norm,
                           activation=activation, eps=1e-5)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x)[:, -1])


def modadd_splits(p: int, train_fraction: float, data_seed: int) -> dict:
    """All p² pairs (a, b) as tokens ``[a, b, p]`` with targets ``(a + b) mod p``, split by a permutation drawn
    from ``data_seed``: the first ``round(train_fraction·p²)`` pairs train, the rest test."""
    if not 0 < train_fraction < 1:
        raise LandscapeError(f"train_fraction must be in (0, 1), got {train_fraction}")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.stack([a, b, torch.full_like(a, p)], 1)
    y = (a + b) % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(int(data_seed)))
    n_train = int(round(train_fraction * p * p))
    if not 1 <= n_train < p * p:
        raise LandscapeError(f"train_fraction={train_fraction} leaves no training or no test pair of the {p * p}")
    return {"train": (x[perm[:n_train]], y[perm[:n_train]]), "test": (x[perm[n_train:]], y[perm[n_train:]])}


class TransformerProblem(NetworkProblem):
    """A :class:`NetworkProblem` over a :class:`Transformer`, K points evaluated at once by batched products
    (:func:`.attention.transformer_logits`) instead of ``functional_call`` under ``vmap``.

    The batched evaluator is checked against the module's own call by the differential check when the problem is
    built (as every fast path is); if it ever differs it is dropped for ``functional_call``, with a note.
    """

    #: Adam's learning rate by default (:func:`landscape.minima.train.default_lr`): at 1e-3 2,000 steps left seeds
    #: 0 and 1 at loss ~0.18; at 3e-3 both are checked minima after 2,000 steps, no polish (losses 1.1e-5 and
    #: 1.7e-5, |grad L| 5.3e-5 and 8.1e-5; 15 CPU s for the two, one thread).
    train_lr = 3e-3

    def __init__(self, name, params, module: Transformer, splits, loss="cross_entropy", weight_decay=0.0,
                 summary=""):
        self._attention = dict(module.config)  # set before the check the base class runs
        super().__init__(name, params, module, splits, loss, weight_decay=weight_decay, summary=summary)

    @property
    def evaluator(self) -> str:
        """``"attention"`` (the batched transformer) or ``"vmap"`` (generic functional_call)."""
        return "attention" if getattr(self, "_attention", None) else "vmap"

    def _evaluate(self, thetas, data):
        if not self._attention:
            return super()._evaluate(thetas, data)
        x, y = data
        logits = transformer_logits(self._attention, self.layout.unflatten(thetas), x[0])
        value = self._batched_loss(logits, y)
        if self.weight_decay:
            mask = self._decay.to(thetas.device)
            value = value + 0.5 * self.weight_decay * thetas[:, mask].pow(2).sum(-1)
        return value

    def _activation_numel(self, n_samples):
        """Per point, the largest intermediate: the attention scores (N·heads·T²) or the MLP's hidden values."""
        if not self._attention:
            return super()._activation_numel(n_samples)
        x = self._splits["train"][0]
        t, d = x.shape[1], self.module_.unembed.in_features
        return n_samples * t * max(self._attention["heads"] * t, self.module_.blocks[0].fc1.out_features, d)

    def check_capture(self, points, *, generator=None):
        """See :meth:`NetworkProblem.check_capture`; a batched evaluator that differs runs ``functional_call``."""
        try:
            return super().check_capture(points, generator=generator)
        except LandscapeError as err:
            if not self._attention:
                raise
            self._attention = None
            self.capture["notes"].append(f"the batched transformer evaluator is not the module's function ({err}); "
                                         "functional_call runs instead")
            return super().check_capture(points, generator=generator)

    def accuracy(self, thetas: torch.Tensor, split: str = "train") -> torch.Tensor:
        """Fraction of the split's pairs whose answer (the largest logit) is right, per point: shape (K,)."""
        thetas, single = self._check(thetas)
        x, y = self._device_data(split, thetas.device, thetas.dtype)
        with torch.no_grad():
            logits = transformer_logits(self.module_.config, self.layout.unflatten(thetas), x)
        acc = (logits.argmax(-1) == y).to(thetas.dtype).mean(-1)
        return acc[0] if single else acc

    def _init_one(self, generator):
        """PyTorch's defaults (Linear U(±1/√fan_in), LayerNorm 1 and 0), token embeddings and positions N(0, 1/d)."""
        theta = super()._init_one(generator)
        d = self.module_.unembed.in_features
        for name in ("embed.weight", "pos"):
            i = self.layout.names.index(name)
            start = sum(self.layout.sizes[:i])
            theta[start:start + self.layout.sizes[i]] = torch.randn(self.layout.sizes[i], generator=generator) / d**0.5
        return theta


def modadd_transformer(p: int = 23, d_model: int = 32, heads: int = 4, layers: int = 1, d_mlp: int = 64,
                       activation: str = "relu", layer_norm: bool = False, train_fraction: float = 0.5,
                       weight_decay: float = 0.0, data_seed: int = 0) -> TransformerProblem:
    """A transformer learning (a + b) mod p from the tokens ``a, b, =``: cross-entropy on the answer token.

    Embedding of p + 1 tokens and learned positions, ``layers`` blocks of ``heads``-head self-attention and an MLP
    of ``d_mlp`` units (ReLU or GELU), pre-norm LayerNorm and a final one when ``layer_norm``, a linear unembedding
    to p classes. The p² pairs are split by ``train_fraction`` (drawn from ``data_seed``).

    ``weight_decay`` λ adds λ/2·Σ‖W‖² over the weight matrices (embedding, projections, MLP, unembedding; LayerNorm
    gains too) to the loss: the regularizer whose minima the landscape is made of. The grokking papers decay the
    weights with AdamW instead (Nanda et al. 2023: decoupled decay 1, learning rate 10⁻³, 30% of the pairs of
    p = 113), whose fixed points are minima of no loss. The default is λ = 0: the training pairs are then
    memorized and the loss falls below 10⁻⁵, a checked minimum (``‖∇L‖ ≤ 10⁻⁴``), in a few thousand Adam steps
    (``landscape train modadd_transformer --lr 3e-3 --steps 3000``). With λ > 0 the point Adam reaches in minutes
    is not one: the loss goes on falling slowly (the weight-decay phase in which grokking happens; at λ = 10⁻³
    after 3,000 Adam and 20,000 descent steps ‖∇L‖ is still 7-13× over the stationarity tolerance). Grokked
    minima of the λ = 0 loss come from the optimizer's own decay instead (``landscape train modadd_transformer
    -p train_fraction=0.6 --decoupled-decay 2 --lr 3e-3 --steps 12000``: 96-100% test accuracy, checked minima).
    """
    for key, value in (("p", p), ("d_model", d_model), ("heads", heads), ("layers", layers), ("d_mlp", d_mlp)):
        if not isinstance(value, int) or value < (2 if key == "p" else 1):
            raise LandscapeError(f"{key} must be a whole number >= {2 if key == 'p' else 1}, got {value!r}")
    TRANSFORMER_ACTIVATIONS.lookup(activation)
    params = dict(p=p, d_model=d_model, heads=heads, layers=layers, d_mlp=d_mlp, activation=activation,
                  layer_norm=layer_norm, train_fraction=train_fraction, weight_decay=weight_decay,
                  data_seed=data_seed)
    module = Transformer(p + 1, p, 3, d_model, heads, d_mlp, layers, layer_norm, activation)
    return TransformerProblem("modadd_transformer", params, module, modadd_splits(p, train_fraction, data_seed),
                              "cross_entropy", weight_decay=weight_decay,
                              summary="transformer on (a + b) mod p, the grokking task, cross-entropy")
