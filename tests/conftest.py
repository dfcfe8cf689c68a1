import os
import tempfile

import pytest
import torch

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
# The tests keep their caches (surfaces, the `problems` listing) to themselves, out of the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="landscape-tests-cache-")

#: Small instances of every registered problem, so the whole registry is tested in seconds.
SMALL = {
    "himmelblau": {},
    "double_well": {},
    "ring": {},
    "quadratic_regression": {"n_train": 200, "n_test": 50},
    "digits_mlp": {"width": 16},
    "moons_mlp": {"width": 8, "n_train": 100, "n_test": 50},
    "teacher_student": {"width": 5, "n_train": 100, "n_test": 50},
    "deep_linear": {"n_train": 50},
    "venturi_relu": {"n_train": 400, "n_test": 100},
    "exp_linear": {"dim": 10, "n_train": 40, "n_test": 20},
    "digits_cnn": {"width": 2, "n_train": 64},
    "digits_resnet": {"width": 2, "n_train": 64},
    "modadd_transformer": {"p": 5, "d_model": 8, "heads": 2, "d_mlp": 16},
}


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", metavar="cpu|cuda|auto",
                     help="Where tests/test_device.py computes, checked against the CPU (default: cpu).")


@pytest.fixture
def device(request):
    """The device named by ``--device``; the tests skip, saying why, where it is absent."""
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: CUDA is not available on this machine")
    import landscape

    return landscape.resolve_device(name)
