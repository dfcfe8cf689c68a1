"""`landscape connect` on an idle and on a busy machine, with spinning and with passive OpenMP waiting.

The busy machine is made here: ``--burners`` processes that spin on the CPU for the whole run. Runs are
interleaved (policy × load, ``--repeats`` rounds) and each reports the child's CPU seconds (user + system)
and wall seconds; the summary gives, per policy, busy CPU / idle CPU (the goal: at most 1.3).

    python benchmarks/thread_policy.py A.pt B.pt [--repeats 2] [--burners 2] [--threads 2]

``spin`` is GNU OpenMP's own default (``GOMP_SPINCOUNT=300000``, what ``landscape`` ran with before it set a
policy); ``passive`` is what the command sets now (``OMP_WAIT_POLICY=PASSIVE``, no variable given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

POLICIES = {"spin": {"GOMP_SPINCOUNT": "300000"}, "passive": {}}


def burn():  # pragma: no cover - a competing load
    while True:
        pass


def run_once(files, policy, threads, timeout):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(POLICIES[policy])
    env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", "from landscape_cli import main; main()", "connect", *files,
                               "--json", "-q"], env=env, capture_output=True, text=True, timeout=timeout)
        status = None if done.returncode else json.loads(done.stdout)["status"]
        if done.returncode:
            raise SystemExit(done.stderr)
    except subprocess.TimeoutExpired:  # killed and waited for: its CPU time so far counts, a lower bound
        status = f"stopped after {timeout:g} s (figures are lower bounds)"
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": cpu, "wall_s": wall, "status": status}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--burners", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--policies", default="spin,passive")
    args = ap.parse_args()
    import multiprocessing

    rows = []
    for rep in range(args.repeats):
        for policy in args.policies.split(","):
            for load in ("idle", "busy"):
                burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)] \
                    if load == "busy" else []
                for b in burners:
                    b.start()
                try:
                    row = {"policy": policy, "load": load, "repeat": rep, **run_once(args.files, policy, args.threads,
                                                                                       args.timeout)}
                finally:
                    for b in burners:
                        b.terminate()
                        b.join()
                rows.append(row)
                print(json.dumps(row), flush=True)
    for policy in args.policies.split(","):
        got = {load: [r for r in rows if r["policy"] == policy and r["load"] == load] for load in ("idle", "busy")}
        cpu = {load: statistics.median(r["cpu_s"] for r in rs) for load, rs in got.items()}
        wall = {load: statistics.median(r["wall_s"] for r in rs) for load, rs in got.items()}
        print(f"{policy}: CPU s idle {cpu['idle']:.2f}, busy {cpu['busy']:.2f} (busy/idle {cpu['busy'] / cpu['idle']:.2f}); "
              f"wall s idle {wall['idle']:.1f}, busy {wall['busy']:.1f} ({args.threads} threads, {args.burners} burners)")


if __name__ == "__main__":
    main()
