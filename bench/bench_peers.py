#!/usr/bin/env python3
"""Benchmark: ``run --rm --network none busybox true`` through every driver, side by side, plus check-kernel.

Each runtime is prepared by its conformance driver (the same configuration the suites use: podman's own store,
crun through the hybrid-cgroup wrapper or runc; docker with its own dockerd), then hyperfine times the driver's
exact argv. Prints medians and the ratio to refrt, and the median of a full ``check(local)`` (config + probes).

    sudo .venv/bin/python bench/bench_peers.py [--runs 20] [--runtime podman --runtime docker ...]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conformance.drivers import RuntimeDriver, driver_class  # noqa: E402
from conformance.kernel import check  # noqa: E402
from conformance.targets import get_target  # noqa: E402

DEFAULT_RUNTIMES = ("refrt", "podman", "podman:runc", "docker")


def bench_check_kernel(runs: int) -> float:
    target = get_target("local")
    target.up()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        check(target)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runtime", action="append", help=f"default: {' '.join(DEFAULT_RUNTIMES)}")
    args = parser.parse_args()
    target = get_target("local")
    target.up()
    drivers: dict[str, RuntimeDriver] = {}
    try:
        for name in args.runtime or DEFAULT_RUNTIMES:
            driver = driver_class(name)(target, f"bench-{name.replace(':', '-')}-{int(time.time())}")
            driver.prepare()
            drivers[name] = driver
        commands = [shlex.join(d.argv(["run", "--rm", "--network", "none", "busybox", "true"]))
                    for d in drivers.values()]
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(["hyperfine", "-N", "--warmup", "2", "--runs", str(args.runs), "--export-json",
                            out.name, *commands], check=True, capture_output=True)
            results = json.loads(Path(out.name).read_text())["results"]
        medians = {name: r["median"] for name, r in zip(drivers, results, strict=True)}
        base = medians.get("refrt")
        print(f"{'runtime':<14} {'median run --rm true':>22} {'x refrt':>8}")
        for name, median in medians.items():
            ratio = f"{median / base:.2f}" if base else "-"
            print(f"{name:<14} {median * 1000:>19.0f} ms {ratio:>8}")
    finally:
        for driver in drivers.values():
            driver.cleanup()
            driver.close()
    print(f"check-kernel (config + all probes, local): median {bench_check_kernel(5) * 1000:.0f} ms over 5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
