"""What the ``landscape`` command sets before torch is imported: how its threads wait.

OpenMP threads (torch's CPU kernels) spin while they wait for work by default (``OMP_WAIT_POLICY=ACTIVE``
in effect: GNU OpenMP spins about 300,000 iterations before sleeping). On a machine that runs other work, a
spinning thread holds a core that another process needs and waits for threads that are not running: the
main-pair ``connect`` took 41–52 CPU s with 2 threads on a busy 2-core machine against 2.4 s with one.
The command therefore makes its threads wait passively (``OMP_WAIT_POLICY=PASSIVE``: a waiting thread sleeps)
unless the user has set ``OMP_WAIT_POLICY`` (or GNU's ``GOMP_SPINCOUNT``) already. The OpenMP runtime reads the
variable once, when it is loaded with torch, so this runs first, without importing torch.

No torch import here: ``apps/__init__.py`` calls :func:`set_thread_policy` before anything imports torch.
"""

from __future__ import annotations

import os

#: The wait policy the command uses unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set.
WAIT_POLICY = "PASSIVE"


def set_thread_policy(environ=None) -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` (``os.environ``) unless the user chose a policy; return the
    policy in effect, ``"PASSIVE"``, or ``"user: <value>"`` when the user's own setting stands."""
    environ = os.environ if environ is None else environ
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if environ.get(name):
            return f"user: {name}={environ[name]}"
    environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return WAIT_POLICY
