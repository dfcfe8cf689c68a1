"""torch's fused attention kernel, which has no derivative, kept out of a problem's evaluations.

In evaluation mode ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` call
``aten::_native_multi_head_attention`` when they can, a kernel torch cannot differentiate ("derivative for
aten::_native_multi_head_attention is not implemented"); under ``torch.func`` the parameters do not look as if
they required gradients, so the fast path is taken. It computes the same function as the layers' plain path.
"""

from __future__ import annotations

import torch
from torch import nn

#: Layers that take torch's fused fast path in evaluation mode.
FUSED = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def fused_attention_off(module: nn.Module) -> nn.Module:
    """``module``, with torch's multi-head attention fast path turned off in this process if it has such a layer.

    ``torch.backends.mha.set_fastpath_enabled`` is process-wide: once a problem holds such a layer, every
    ``MultiheadAttention`` of the process runs torch's plain (differentiable) path, which computes the same
    function.
    """
    if any(isinstance(m, FUSED) for m in module.modules()):
        torch.backends.mha.set_fastpath_enabled(False)
    return module
