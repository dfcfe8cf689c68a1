"""Layers of attention networks in the traced bound graph: ``nn.LayerNorm``, ``nn.Embedding``, ``nn.Softmax``,
``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder``.

``torch.fx`` keeps torch's own layers as single calls, so each is bounded here as the composition of what it
computes (:mod:`.attention_ops`, :mod:`.attention_bounds`), in evaluation mode (dropout off) and only with the
settings written out below; any other setting is refused with its reason (the dense check stays). With
``batch_first=False`` (PyTorch's default) the input must be a value whose rows a ``transpose``/``permute`` moved to
its second dimension ([T, N, E]); the layer is bounded batch first and its output moved back. Each entry of
:data:`MODULES` is ``(reason(module) -> str | None, handler(walk, module, args, kwargs) -> value)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import attention_bounds as ab
from . import attention_ops as ao
from . import bounds
from . import relaxed as rx
from .operations import RELU, _arg, activation
from .relaxed import Model, Param, Unsupported


def _param(walk, p):
    return None if p is None else Param(walk.name(p))


def _dropout_reason(m, *ps) -> str | None:
    if m.training and any(p > 0 for p in ps):
        return f"{type(m).__name__} in training mode (dropout is random)"
    return None


# ---------------------------------------------------------------- LayerNorm, Embedding, Softmax
def _norm_reason(m):
    return None


def _norm(walk, m, a, k):
    return ao.layer_norm(walk, walk.model(_arg(a, k, 0, "input", None)), m.normalized_shape, _param(walk, m.weight),
                         _param(walk, m.bias), m.eps)


def _embedding_reason(m):
    return None if m.max_norm is None else "Embedding with max_norm (it renormalizes its weight in place)"


def _embedding(walk, m, a, k):
    return ao.embedding(walk, walk.model(_arg(a, k, 0, "input", None)), _param(walk, m.weight))


def _softmax_reason(m):
    return None if m.dim is not None else "Softmax without a dim"


def _softmax(walk, m, a, k):
    return ab.softmax(walk.model(_arg(a, k, 0, "input", None)), m.dim)


# ---------------------------------------------------------------- multi-head attention
def _mha_reason(m):
    if m.bias_k is not None or m.add_zero_attn:
        return "MultiheadAttention with add_bias_kv or add_zero_attn"
    return _dropout_reason(m, m.dropout)


def _linear(walk, x, weight: Param, bias: Param | None, part=None, *, packed=True):
    """A projection of ``x``; ``part``: its rows of the packed bias, and of the packed weight unless ``packed`` is
    False (the separate q/k/v weights of attention with its own kdim/vdim are whole)."""
    if part is not None:
        weight = Param(weight.name, (part,)) if packed else weight
        bias = None if bias is None else Param(bias.name, (part,))
    return ao.ops._linear(walk, (x, weight, bias), {})


def _heads(x: Model, heads: int) -> Model:
    """[R, L, E] → [R, H, L, E/H]."""
    r, length, e = x.c.shape
    return x.map(lambda t: t.reshape(r, length, heads, e // heads).transpose(1, 2))


def multi_head(walk, m: nn.MultiheadAttention, query, key, value, attn_mask=None, need_weights=True,
               average=True):
    """What ``nn.MultiheadAttention`` computes (batch first): ``(output, weights or None)``."""
    e, h = m.embed_dim, m.num_heads
    w_in, b_in = _param(walk, m.in_proj_weight), _param(walk, m.in_proj_bias)
    if m._qkv_same_embed_dim:
        q, k, v = (_linear(walk, x, w_in, b_in, slice(i * e, (i + 1) * e)) for i, x in
                   enumerate((query, key, value)))
    else:
        q, k, v = (_linear(walk, x, _param(walk, w), b_in, slice(i * e, (i + 1) * e), packed=False)
                   for i, (x, w) in enumerate(((query, m.q_proj_weight), (key, m.k_proj_weight),
                                               (value, m.v_proj_weight))))
    q, k, v = (_heads(t, h) for t in (q, k, v))
    scores = rx.scale(ab.bilinear(q, k.map(lambda t: t.transpose(-2, -1)), torch.matmul), (e // h) ** -0.5)
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            raise Unsupported("a per-sample attention mask (3-D attn_mask)")
        scores = ao.masked_fill(scores, attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else \
            rx.combine(scores, attn_mask, 1.0)
    p = ab.softmax(scores, -1)
    out = ab.bilinear(p, v, torch.matmul)
    r, _, length, _ = out.c.shape
    out = out.map(lambda t: t.transpose(1, 2).reshape(r, length, e))
    out = _linear(walk, out, _param(walk, m.out_proj.weight), _param(walk, m.out_proj.bias))
    weights = None if not need_weights else p.map(lambda t: t.mean(1)) if average else p
    return out, weights


def _first(walk, x, batch_first: bool) -> Model:
    """A layer's input batch first: as it is, or (``batch_first=False``, PyTorch's default: [T, N, E]) a value whose
    rows a ``transpose``/``permute`` moved to the second dimension, moved back (the layer computes the same)."""
    if batch_first:
        return walk.model(x)
    if not isinstance(x, ao.Moved) or x.axis != 1 or x.value.c.dim() != 3:
        raise Unsupported("a batch_first=False layer given a value whose batch is not its second dimension")
    return x.value.map(lambda t: t.transpose(0, 1))


def _back(out: Model, batch_first: bool):
    return out if batch_first else ao.Moved(out.map(lambda t: t.transpose(0, 1)), 1)


def _causal(mask, is_causal):
    """The mask a layer uses given torch's ``is_causal`` hint: where it is set torch may apply the causal mask in place
    of the one given, so the one given must be that (boolean, or 0 and −inf); else the call is refused."""
    if not is_causal:
        return mask
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise Unsupported("is_causal without a 2-D attention mask")
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    same = torch.equal(mask, above) if mask.dtype == torch.bool else \
        torch.equal(torch.isneginf(mask), above) and bool((mask[~above] == 0).all())
    if not same:
        raise Unsupported("is_causal with an attention mask that is not the causal one (torch may use the causal one)")
    return mask


def _mha(walk, m, a, k):
    query, key, value = (_first(walk, _arg(a, k, i, n, None), m.batch_first)
                         for i, n in enumerate(("query", "key", "value")))
    if _arg(a, k, 3, "key_padding_mask", None) is not None:
        raise Unsupported("MultiheadAttention with a key_padding_mask (it depends on the sample)")
    mask = _arg(a, k, 5, "attn_mask", None)
    if isinstance(mask, (Model, Param)):
        raise Unsupported("an attention mask computed by the network")
    mask = _causal(mask, _arg(a, k, 7, "is_causal", False))
    out, weights = multi_head(walk, m, query, key, value, mask, _arg(a, k, 4, "need_weights", True),
                              _arg(a, k, 6, "average_attn_weights", True))
    return _back(out, m.batch_first), weights


# ---------------------------------------------------------------- transformer encoder layers
def _act(fn):
    if fn is F.relu or type(fn) is nn.ReLU:
        return RELU
    if fn is F.gelu:
        return bounds.GELU
    if fn is F.silu:
        return ab.SILU
    return activation(fn) if isinstance(fn, nn.Module) else None


def _layer_reason(m):
    if type(m.norm1) is not nn.LayerNorm or type(m.norm2) is not nn.LayerNorm:
        return "TransformerEncoderLayer with norms other than LayerNorm"
    if _act(m.activation) is None:
        return f"TransformerEncoderLayer with the activation {m.activation!r}"
    return _mha_reason(m.self_attn) or _dropout_reason(m, m.dropout.p, m.dropout1.p, m.dropout2.p)


def encoder_layer(walk, m: nn.TransformerEncoderLayer, x: Model, mask=None) -> Model:
    def attend(h):
        return multi_head(walk, m.self_attn, h, h, h, mask, need_weights=False)[0]

    def feed(h):
        return walk.module(m.linear2, rx.activate(walk.module(m.linear1, h), _act(m.activation)))

    if m.norm_first:
        x = rx.combine(x, attend(_norm(walk, m.norm1, (x,), {})), 1.0)
        return rx.combine(x, feed(_norm(walk, m.norm2, (x,), {})), 1.0)
    x = _norm(walk, m.norm1, (rx.combine(x, attend(x), 1.0),), {})
    return _norm(walk, m.norm2, (rx.combine(x, feed(x), 1.0),), {})


def _layer(walk, m, a, k):
    if _arg(a, k, 2, "src_key_padding_mask", None) is not None:
        raise Unsupported("a src_key_padding_mask (it depends on the sample)")
    mask = _arg(a, k, 1, "src_mask", None)
    if isinstance(mask, (Model, Param)):
        raise Unsupported("an attention mask computed by the network")
    mask = _causal(mask, _arg(a, k, 3, "is_causal", False))
    first = m.self_attn.batch_first
    return _back(encoder_layer(walk, m, _first(walk, _arg(a, k, 0, "src", None), first), mask), first)


def _encoder_reason(m):
    if m.norm is not None and type(m.norm) is not nn.LayerNorm:
        return f"TransformerEncoder with a final {type(m.norm).__name__}"
    return next((why for layer in m.layers if (why := _layer_reason(layer)) is not None), None)


def _encoder(walk, m, a, k):
    if _arg(a, k, 2, "src_key_padding_mask", None) is not None:
        raise Unsupported("a src_key_padding_mask (it depends on the sample)")
    mask = _arg(a, k, 1, "mask", None)
    if isinstance(mask, (Model, Param)):
        raise Unsupported("an attention mask computed by the network")
    mask = _causal(mask, _arg(a, k, 3, "is_causal", False))
    first = m.layers[0].self_attn.batch_first
    x = _first(walk, _arg(a, k, 0, "src", None), first)
    for layer in m.layers:
        x = encoder_layer(walk, layer, x, mask)
    return _back(x if m.norm is None else _norm(walk, m.norm, (x,), {}), first)


MODULES = {
    nn.LayerNorm: (_norm_reason, _norm), nn.Embedding: (_embedding_reason, _embedding),
    nn.Softmax: (_softmax_reason, _softmax), nn.MultiheadAttention: (_mha_reason, _mha),
    nn.TransformerEncoderLayer: (_layer_reason, _layer), nn.TransformerEncoder: (_encoder_reason, _encoder),
}
