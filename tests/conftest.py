import os
import tempfile

import pytest
import torch

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
# The tests keep their caches (surfaces, the `problems` listing) to themselves, out of the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="landscape-tests-cache-")


def _threads_per_worker():
    """CPU threads for each of pytest-xdist's workers: the cores this process may use, shared out among them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


# Under pytest-xdist (-n N) N workers share the cores: each computes on its share (1 thread with 2 workers on 2
# cores) instead of every worker's torch starting a thread per core and stalling the others; the CLI
# subprocesses the tests start inherit the same. A thread count the caller set (OMP_NUM_THREADS) is kept.
if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(_threads_per_worker())
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

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


# The README runs the suite with `-n auto --dist loadfile`: a file's tests run on one worker, so a module-scoped
# fixture (trained minima, a served explorer) is made once. (`--dist loadgroup` with `xdist_group` marks was tried:
# with pytest 9 and xdist 3.8 the group never reaches the test ids, and digits_resnet was trained on both workers.)
