"""Page faults and CPU time of one gradient of a ~1M-parameter CNN under glibc allocator policies.

Each policy runs in its own process (``mallopt`` settings last for the process), interleaved over
``--repeats`` rounds; each process takes ``--gradients`` loss-and-gradient calls of one point on
``--images`` images after one warm-up call, and reports per gradient the minor page faults, user and system
CPU seconds, and the process's peak resident set.

    python benchmarks/alloc_policy.py [--images 5000] [--gradients 3] [--repeats 2]

Policies (``keep_freed_memory`` arguments): ``none`` (glibc's defaults), ``small`` (freed blocks up to 32 MiB kept,
what ``landscape`` did before: mmap threshold 32 MiB, trim threshold 256 MiB), ``nommap`` (no block is ``mmap``'d,
glibc's trim threshold: ``MALLOC_MMAP_MAX_=0`` alone), ``nommap256`` (no ``mmap``, 256 MiB trim threshold) and
``nommap1g`` (no ``mmap``, 1 GiB kept: what ``landscape`` does now, ``keep_freed_memory()``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

POLICIES = {"none": None, "small": dict(max_mmap_blocks=None, trim_threshold=256 << 20),
            "nommap": dict(max_mmap_blocks=0, mmap_threshold=128 << 10, trim_threshold=128 << 10),
            "nommap256": dict(max_mmap_blocks=0, trim_threshold=256 << 20),
            "nommap1g": dict(max_mmap_blocks=0, trim_threshold=1 << 30)}


def child(policy, images, gradients):
    import time

    import torch

    import landscape
    from landscape.bench import real_cnn

    torch.set_num_threads(1)
    if POLICIES[policy] is not None:
        assert landscape.keep_freed_memory(**POLICIES[policy])
    problem = real_cnn(images)
    theta = problem.init(torch.Generator().manual_seed(0))[None]
    problem.loss_and_grad(theta)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(gradients):
        problem.loss_and_grad(theta)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    print(json.dumps({"policy": policy, "dim": problem.dim, "images": images,
                      "minor_faults": (r1.ru_minflt - r0.ru_minflt) / gradients,
                      "user_s": (r1.ru_utime - r0.ru_utime) / gradients, "sys_s": (r1.ru_stime - r0.ru_stime) / gradients,
                      "wall_s": wall / gradients, "peak_rss_mib": r1.ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--gradients", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=list(POLICIES))
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()
    if args.child:
        child(args.child, args.images, args.gradients)
        return
    rows = []
    for _ in range(args.repeats):
        for policy in args.policies.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", policy, "--images", str(args.images),
                                  "--gradients", str(args.gradients)], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    for policy in args.policies.split(","):
        mine = [r for r in rows if r["policy"] == policy]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("minor_faults", "user_s", "sys_s", "peak_rss_mib")}
        print(f"{policy:6s} per gradient: {mean['minor_faults']:,.0f} minor faults, user {mean['user_s']:.2f} s, "
              f"system {mean['sys_s']:.2f} s, CPU {mean['user_s'] + mean['sys_s']:.2f} s; peak RSS "
              f"{mean['peak_rss_mib']:,.0f} MiB")


if __name__ == "__main__":
    main()
