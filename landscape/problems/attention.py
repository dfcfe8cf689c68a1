"""K transformers evaluated at once: every layer of K networks is one batched product, attention one product
over K·N·heads (the same arithmetic as :class:`.transformer.Transformer`, checked against it in float64).

The loss reads the last position only, so the last block computes its queries, its residual update and its MLP
at that position alone (keys and values at every position): the module computes all T positions there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _linear(h, w, b):
    """K affine maps: ``h [K, ..., in]``, ``w [K, out, in]``, ``b [K, out]`` -> ``[K, ..., out]`` (one baddbmm)."""
    flat = h.reshape(h.shape[0], -1, h.shape[-1])
    out = torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
    return out.view(*h.shape[:-1], w.shape[1])


def _layer_norm(h, w, b, eps):
    """LayerNorm over the last axis with K gains and biases ``w, b [K, d]`` (biased variance, as ``nn.LayerNorm``)."""
    mean = h.mean(-1, keepdim=True)
    centred = h - mean
    var = centred.pow(2).mean(-1, keepdim=True)
    shape = (h.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
    return centred * torch.rsqrt(var + eps) * w.view(shape) + b.view(shape)


def _attention(cfg, p, pre, queries, h):
    """Self-attention of block ``pre`` for K networks: queries from ``queries [K, N, Tq, d]``, keys and values from
    ``h [K, N, T, d]``; returns ``[K, N, Tq, d]``."""
    k_, n, t, _ = h.shape
    tq, heads, dh = queries.shape[2], cfg["heads"], cfg["d_head"]

    def split(x, name, length):  # [K, N, L, H·dh] -> [K, N, H, L, dh]
        return _linear(x, p[pre + name + ".weight"], p[pre + name + ".bias"]).view(k_, n, length, heads, dh) \
            .transpose(2, 3)

    q, k, v = split(queries, "q", tq), split(h, "k", t), split(h, "v", t)
    att = (q @ k.transpose(-2, -1) / math.sqrt(dh)).softmax(dim=-1)  # [K, N, H, Tq, T]: one bmm over K·N·H
    z = (att @ v).transpose(2, 3).reshape(k_, n, tq, heads * dh)
    return _linear(z, p[pre + "out.weight"], p[pre + "out.bias"])


def transformer_logits(cfg: dict, params: dict, tokens: torch.Tensor) -> torch.Tensor:
    """Logits at the last position of K transformers (:class:`.transformer.Transformer`) on shared tokens.

    Parameters
    ----------
    cfg : dict
        The module's ``config``: ``heads``, ``d_head``, ``layers``, ``layer_norm``, ``activation``, ``eps``.
    params : dict of str to Tensor
        The module's parameters by name, each with a leading K axis (``layout.unflatten(thetas)``).
    tokens : LongTensor, shape (N, T)

    Returns
    -------
    Tensor, shape (K, N, classes)
    """
    h = params["embed.weight"][:, tokens] + params["pos"].unsqueeze(1)  # [K, N, T, d]
    act = torch.relu if cfg["activation"] == "relu" else F.gelu
    norm = cfg["layer_norm"]
    for i in range(cfg["layers"]):
        pre = f"blocks.{i}."
        last = i == cfg["layers"] - 1
        a = _layer_norm(h, params[pre + "ln1.weight"], params[pre + "ln1.bias"], cfg["eps"]) if norm else h
        h = (h[:, :, -1:] if last else h) + _attention(cfg, params, pre + "attn.", a[:, :, -1:] if last else a, a)
        m = _layer_norm(h, params[pre + "ln2.weight"], params[pre + "ln2.bias"], cfg["eps"]) if norm else h
        m = act(_linear(m, params[pre + "fc1.weight"], params[pre + "fc1.bias"]))
        h = h + _linear(m, params[pre + "fc2.weight"], params[pre + "fc2.bias"])
    h = h[:, :, -1]
    if norm:
        h = _layer_norm(h, params["ln_f.weight"], params["ln_f.bias"], cfg["eps"])
    return _linear(h, params["unembed.weight"], params["unembed.bias"])
