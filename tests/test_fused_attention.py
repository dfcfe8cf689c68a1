"""A user's nn.MultiheadAttention / nn.TransformerEncoderLayer: torch's fused eval-mode kernel has no derivative."""

import pytest
import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

import landscape


class Encoder(nn.Module):
    def __init__(self, layer: str):
        super().__init__()
        self.emb = nn.Linear(3, 8)
        self.body = (nn.MultiheadAttention(8, 2, batch_first=True) if layer == "mha" else
                     nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True))
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = self.emb(x)
        h = self.body(h, h, h)[0] if isinstance(self.body, nn.MultiheadAttention) else self.body(h)
        return self.out(h.mean(1))


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # torch.func, not ours
def test_attention_layers_get_a_gradient_equal_to_the_modules_own():
    torch.manual_seed(0)
    x, y = torch.randn(12, 4, 3, dtype=torch.float64), torch.randint(0, 2, (12,))
    for layer in ("mha", "encoder"):
        model = Encoder(layer).double()
        problem = landscape.from_module(model, (x, y), "cross_entropy")
        thetas = 0.3 * torch.randn(3, problem.dim, dtype=torch.float64)
        loss, grad = problem.loss_and_grad(thetas)
        for k in range(3):  # the module's own call, in training mode (never the fused kernel), dropout 0
            ref = Encoder(layer).double().train()
            vector_to_parameters(thetas[k].clone(), ref.parameters())
            own = nn.functional.cross_entropy(ref(x), y)
            own.backward()
            own_grad = torch.cat([p.grad.flatten() for p in ref.parameters()])
            assert torch.allclose(loss[k], own, rtol=1e-10, atol=1e-12), layer
            assert torch.allclose(grad[k], own_grad, rtol=1e-8, atol=1e-10), layer
