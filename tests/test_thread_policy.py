"""The landscape command's thread and allocator policy: waiting threads sleep, large freed blocks are reused."""

import os
import subprocess
import sys

import pytest

import landscape
from landscape._device import passive_workers
from landscape_cli._startup import set_thread_policy


@pytest.mark.parametrize("given, policy, env", [
    ({}, "PASSIVE", "PASSIVE"),
    ({"OMP_WAIT_POLICY": "active"}, "user: OMP_WAIT_POLICY=active", "active"),
    ({"GOMP_SPINCOUNT": "300000"}, "user: GOMP_SPINCOUNT=300000", None),
    ({"OMP_WAIT_POLICY": ""}, "PASSIVE", "PASSIVE"),
])
def test_the_command_chooses_passive_waiting_unless_the_user_chose(given, policy, env):
    environ = dict(given)
    assert set_thread_policy(environ) == policy
    assert environ.get("OMP_WAIT_POLICY") == env
    workers = dict(given)
    assert passive_workers(workers) == (policy == "PASSIVE")
    assert workers.get("OMP_WAIT_POLICY") == env


CHILD = """
import os, sys
sys.argv = ["landscape", "info", "no-such-file.pt"]
from landscape_cli import main
try:
    main()
except SystemExit:
    pass
print(os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
"""


def test_the_policy_is_in_the_environment_before_torch_is_loaded():
    """The OpenMP runtime reads OMP_WAIT_POLICY once, when torch loads it: the entry point sets it first."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", "import sys; print('torch' in sys.modules)\n" + CHILD], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "PASSIVE", "True"], out.stderr[-2000:]
    mine = subprocess.run([sys.executable, "-c", CHILD], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                          capture_output=True, text=True, timeout=300)
    assert mine.stdout.split() == ["ACTIVE", "True"], mine.stderr[-2000:]


KEEP = """
import landscape
print(landscape.keep_freed_memory(), landscape.keep_freed_memory(max_mmap_blocks=0))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_allocator_policy_is_set_unless_the_user_set_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    ours = subprocess.run([sys.executable, "-c", KEEP], env=env, capture_output=True, text=True, timeout=300)
    assert ours.stdout.split() == ["True", "True"], ours.stderr[-2000:]
    theirs = subprocess.run([sys.executable, "-c", KEEP], env={**env, "MALLOC_MMAP_MAX_": "0"}, capture_output=True,
                            text=True, timeout=300)
    assert theirs.stdout.split() == ["False", "False"], theirs.stderr[-2000:]
