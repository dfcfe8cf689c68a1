"""The same computations on ``--device`` (default cpu; ``pytest --device cuda`` on a GPU machine)
agree with the CPU: batched losses and gradients, training, a certified DSS path, a plane sweep."""

import pytest
import torch

import landscape

from conftest import SMALL

NETWORKS = ["quadratic_regression", "digits_mlp", "teacher_student", "deep_linear"]


@pytest.mark.parametrize("name", NETWORKS + ["himmelblau"])
def test_loss_and_grad_agree_with_the_cpu(name, device):
    problem = landscape.make_problem(name, **SMALL[name])
    thetas = problem.init(torch.Generator().manual_seed(0), n=7, dtype=torch.float64)
    loss, grad = problem.loss_and_grad(thetas.to(device))
    assert loss.device.type == device.type and grad.device.type == device.type
    ref_loss, ref_grad = problem.loss_and_grad(thetas)
    torch.testing.assert_close(loss.cpu(), ref_loss, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad.cpu(), ref_grad, rtol=1e-8, atol=1e-10)
    # float32 on the device: the tolerance of single precision
    single = problem.loss(thetas.float().to(device)).cpu().double()
    torch.testing.assert_close(single, ref_loss, rtol=1e-4, atol=1e-6)


def test_training_agrees_with_the_cpu(device):
    problem = landscape.make_problem("quadratic_regression", **SMALL["quadratic_regression"])
    here = landscape.train(problem, [0, 1], lr=0.01, steps=300, device=device, dtype=torch.float64)
    ref = landscape.train(problem, [0, 1], lr=0.01, steps=300, dtype=torch.float64)
    torch.testing.assert_close(here.losses.cpu().double(), ref.losses.double(), rtol=1e-6, atol=1e-9)
    assert float(here.losses.max()) < float(problem.loss(problem.init(torch.Generator().manual_seed(0), n=2,
                                                                        dtype=torch.float64)).min())


def test_certified_string_on_the_ring_agrees_with_the_cpu(device):
    ring = landscape.make_problem("ring")
    a, b = ring.minima
    here = landscape.connect(ring, a.to(device), b.to(device), method="string", level=0.3,
                             generator=torch.Generator().manual_seed(0))
    ref = landscape.connect(ring, a, b, method="string", level=0.3, generator=torch.Generator().manual_seed(0))
    assert here.status == ref.status == "connected" and here.max_loss <= 0.3
    assert here.points.device.type == device.type
    assert here.normalized_length == pytest.approx(ref.normalized_length, rel=1e-6)
    # the straight segment crosses the hill (loss R⁴ = 1 at the centre) on every device
    straight = landscape.connect(ring, a.to(device), b.to(device), method="linear", level=0.3)
    assert straight.status == "not_found" and straight.max_loss == pytest.approx(1.0, rel=1e-6)


def test_plane_sweep_agrees_with_the_cpu(device):
    problem = landscape.make_problem("digits_mlp", **SMALL["digits_mlp"])
    theta = problem.init(torch.Generator().manual_seed(0), dtype=torch.float64)
    plane = landscape.make_plane("random", problem, theta[None], generator=torch.Generator().manual_seed(1))
    here = landscape.evaluate_plane(problem, plane, grid=(5, 4), device=device, dtype=torch.float64)
    ref = landscape.evaluate_plane(problem, plane, grid=(5, 4), dtype=torch.float64)
    assert tuple(torch.as_tensor(ref.losses).shape) in {(5, 4), (4, 5)}
    torch.testing.assert_close(torch.as_tensor(here.losses).cpu(), torch.as_tensor(ref.losses), rtol=1e-9,
                               atol=1e-12)
