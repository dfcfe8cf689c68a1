"""The memory pre-check covers the conv problems (their parameters counted exactly, their activations from
above), and it sees the limits a process runs under: ``ulimit -v`` and its control group."""

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import landscape
import landscape.problems.params as checks
from landscape import LandscapeError
from landscape.problems.params import _FOOTPRINTS


@pytest.mark.parametrize("name,width,depth", [("digits_cnn", 1, 1), ("digits_cnn", 3, 3), ("digits_cnn", 8, 2),
                                              ("digits_resnet", 1, 1), ("digits_resnet", 3, 3),
                                              ("digits_resnet", 8, 2), ("digits_resnet", 2, 4)])
def test_conv_footprints_count_the_parameters_exactly_and_the_activations_from_above(name, width, depth):
    problem = landscape.make_problem(name, width=width, depth=depth)
    dim, data, samples, per_sample = _FOOTPRINTS[name](dict(problem.spec["params"]))
    assert dim == problem.dim
    assert problem.activations_per_sample() <= per_sample <= 2 * problem.activations_per_sample()
    assert samples >= problem.n_samples() and data >= 1797 * 64


@pytest.mark.parametrize("name,width,says", [
    ("digits_resnet", 65536, "needs about 74.4 TiB (317,830,397,962 parameters"),
    ("digits_cnn", 65536, "needs about "),
    ("digits_resnet", 1024, "needs about 24.7 GiB (77,638,666 parameters"),
])
def test_a_conv_net_too_big_is_refused_before_building(name, width, says, monkeypatch):
    monkeypatch.setattr(checks, "available_memory", lambda: 4 << 30)
    with pytest.raises(LandscapeError) as err:
        landscape.make_problem(name, width=width)
    assert says in str(err.value) and "has 4 GiB available: use smaller values" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_default_conv_nets_pass():
    assert landscape.make_problem("digits_resnet").dim == 5090 and landscape.make_problem("digits_cnn").dim == 1922


def test_train_under_an_address_space_limit_is_one_line(tmp_path):
    """``ulimit -v 4GiB``: a net that needs 5.23 GiB is refused with the figures before anything is allocated (it
    was an allocator traceback), the limit's figure, not the host's, said."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    exe = Path(sys.executable).with_name("landscape")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "landscape_cli.cli"]
    result = subprocess.run([*head, "train", "digits_resnet", "-w", "400", "--steps", "1", "-o", str(tmp_path / "m")],
                            capture_output=True, text=True, preexec_fn=cap, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about 5.23 GiB" in lines[0], lines
    have = re.search(r"this machine has ([0-9.]+) (GiB|MiB) available: use smaller values", lines[0])
    assert have and (have.group(2) == "MiB" or float(have.group(1)) < 4)  # below the limit, whatever the host has
    assert not (tmp_path / "m").exists()


def test_a_control_group_limit_counts_without_its_reclaimable_cache(tmp_path, monkeypatch):
    proc, group = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/jobs/one\n")
    (proc / "meminfo").write_text("MemTotal: 100000000 kB\nMemAvailable: 50000000 kB\n")
    (proc / "self" / "status").write_text("VmSize: 1000 kB\n")
    folder = group / "jobs" / "one"
    folder.mkdir(parents=True)
    (folder / "memory.max").write_text(f"{4 << 30}\n")
    (folder / "memory.current").write_text(f"{3 << 30}\n")
    (folder / "memory.stat").write_text(f"anon 1\ninactive_file {2 << 30}\n")
    monkeypatch.setattr(checks, "PROC", str(proc))
    monkeypatch.setattr(checks, "CGROUP", str(group))
    assert checks.available_memory() == 3 << 30  # 4 GiB less 1 GiB in use (2 GiB of the 3 are cache)
    (folder / "memory.max").write_text("max\n")
    assert checks.available_memory() == 50000000 * 1024  # no limit: the host's figure
    (proc / "self" / "cgroup").write_text("4:memory:/jobs/one\n0::/\n")  # v1
    v1 = group / "memory" / "jobs" / "one"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 30}\n")
    assert checks.available_memory() == 1 << 30
