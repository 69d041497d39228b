#!/usr/bin/env python3
"""Benchmark: what docker's default seccomp filter costs refrt's ``run``, and a system call under it.

1. ``refrt run --rm --network none busybox true`` with the default filter and with ``seccomp=unconfined``,
   alternating run by run (hyperfine runs one command's series after the other's, and on a shared machine a
   change of load between the two series showed up as a false 8-12 ms "cost"); the medians should differ by
   noise only: the filter is compiled once per process (~2 ms) and installing it is one system call.
2. The compile itself (the default profile to BPF, uncached), timed in-process.
3. getppid() in a tight loop in a forked child, before and after the filter is installed: the per-call price
   of the binary search (about 8 comparisons) that every system call of a container pays.

    sudo .venv/bin/python bench/bench_seccomp.py [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def compile_time(rounds: int = 50) -> float:
    """Median milliseconds to compile the default profile for docker's default capabilities."""
    from runtime.container import capabilities
    from runtime.container.seccomp.compile import compile_profile
    from runtime.container.seccomp.profile import DEFAULT

    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        compile_profile(DEFAULT, list(capabilities.DEFAULT))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def syscall_cost(calls: int = 300_000) -> tuple[float, float]:
    """Nanoseconds per getppid() without and with the default filter, measured in one forked child."""
    from runtime import syscalls
    from runtime.container import capabilities, seccomp
    from runtime.container.seccomp import kernel

    program = seccomp.filter_for(seccomp.SecurityOptions(), False, list(capabilities.DEFAULT))
    assert program is not None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            def loop() -> float:
                getppid = os.getppid
                start = time.perf_counter_ns()
                for _ in range(calls):
                    getppid()
                return (time.perf_counter_ns() - start) / calls

            before = min(loop() for _ in range(3))
            syscalls.set_no_new_privs()
            kernel.install_filter(program)
            after = min(loop() for _ in range(3))
            os.write(w, json.dumps([before, after]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        before, after = json.loads(f.read())
    os.waitpid(pid, 0)
    return before, after


def start_times(refrt: list[str], env: dict[str, str], runs: int, warmup: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each ``run``, the two variants alternating (and swapping order every pair)."""
    base = [*refrt, "run", "--rm", "--network", "none"]
    variants = {"default filter": [*base, "busybox", "true"],
                "unconfined": [*base, "--security-opt", "seccomp=unconfined", "busybox", "true"]}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + runs):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            start = time.perf_counter()
            subprocess.run(variants[name], check=True, env=env, cwd=REPO, capture_output=True)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-seccomp-") as tmp:
        work = Path(tmp)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        env["PYTHONPATH"] = str(REPO)
        refrt = [sys.executable, "-m", "runtime", "--root", str(work / "refrt-root")]
        subprocess.run([*refrt, "image", "bootstrap", "busybox"], check=True, env=env, cwd=REPO,
                       capture_output=True)
        times = start_times(refrt, env, args.runs, args.warmup)
    print(f"{'run --rm busybox true':<24} {'median ms':>10} {'mean ms':>9} {'stdev':>7} {'min ms':>8}")
    for name, values in times.items():
        print(f"{name:<24} {statistics.median(values) * 1e3:>10.1f} {statistics.mean(values) * 1e3:>9.1f} "
              f"{statistics.stdev(values) * 1e3:>7.1f} {min(values) * 1e3:>8.1f}")
    pairs = [a - b for a, b in zip(times["default filter"], times["unconfined"], strict=True)]
    print(f"median of paired differences: {statistics.median(pairs) * 1e3:+.1f} ms over {len(pairs)} pairs")
    print(f"compiling the default profile: {compile_time():.2f} ms (once per process and capability set)")
    before, after = syscall_cost()
    print(f"getppid(): {before:.0f} ns unfiltered, {after:.0f} ns under the filter ({after - before:+.0f} ns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
