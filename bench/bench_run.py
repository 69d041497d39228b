#!/usr/bin/env python3
"""Benchmark: ``refrt run --rm --network none busybox true`` against ``runc run`` on the same rootfs, one run.

Both start one container with fresh mount/PID/UTS/IPC/net namespaces over a busybox rootfs and wait for ``true``.
runc gets a ready bundle (no image resolution, no overlay, no monitor); refrt does its whole path (CLI start,
image lookup, overlay, cgroup, monitor, state files, --rm clean-up). hyperfine measures both, side by side, and
this prints medians and the ratio.

    sudo .venv/bin/python bench/bench_run.py [--runs 30]

``--ops`` measures a container's whole life instead, per step, with the bridge network (issue #15: in a TCG guest
the per-container cost was 20x the host's): ``run --rm`` (bridge and ``--network none``), ``run -d``, ``exec``,
``stop -t 0``, ``rm`` of the stopped container and ``rm -f`` of a running one (the last on the bridge, so it takes
the bridge down). Every ``--refrt`` command line (a refrt with its ``--root``/``--state``; busybox must be there)
gets each step in turn, interleaved, so a load that drifts hurts all alike; medians are printed. Stdlib only, so
it also runs in a guest (copy this file there)::

    bench_run.py --ops --runs 7 --refrt "python3 -I -S /opt/refrt/runtime/__main__.py --root R --state S"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare(work: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """A refrt root with busybox, and a runc bundle whose rootfs is a copy of the same layer."""
    root = work / "refrt-root"
    refrt = [sys.executable, "-m", "runtime", "--root", str(root)]
    subprocess.run([*refrt, "image", "bootstrap", "busybox"], check=True, env=env, cwd=REPO, capture_output=True)
    sys.path.insert(0, str(REPO))
    from runtime.paths import Paths
    from runtime.store.store import Store

    store = Store(Paths.resolve(str(root)))
    layer = store.lower_dirs(store.resolve("busybox"))[0]
    bundle = work / "bundle"
    shutil.copytree(layer, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    (bundle / "config.json").write_text(json.dumps(config))
    return root, bundle


OPS = ("run --rm (bridge)", "run --rm --network none", "run -d", "exec", "stop -t 0", "rm (stopped)",
       "rm -f (running, last)")


def _timed(argv: list[str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench_run: {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return took


def _lifecycle(refrt: list[str], n: int) -> dict[str, float]:
    """One round of every step with one refrt; seconds per step."""
    a, b = f"bench-a-{os.getpid()}-{n}", f"bench-b-{os.getpid()}-{n}"
    took = {
        OPS[0]: _timed([*refrt, "run", "--rm", "busybox", "true"]),
        OPS[1]: _timed([*refrt, "run", "--rm", "--network", "none", "busybox", "true"]),
        OPS[2]: _timed([*refrt, "run", "-d", "--name", a, "busybox", "sleep", "300"]),
        OPS[3]: _timed([*refrt, "exec", a, "true"]),
        OPS[4]: _timed([*refrt, "stop", "-t", "0", a]),
        OPS[5]: _timed([*refrt, "rm", a]),
    }
    _timed([*refrt, "run", "-d", "--name", b, "busybox", "sleep", "300"])
    took[OPS[6]] = _timed([*refrt, "rm", "-f", b])
    return took


def ops_main(refrts: list[str], runs: int) -> int:
    """Interleaved rounds of :func:`_lifecycle` for each refrt command line; a table of medians (ms)."""
    commands = [shlex.split(r) for r in refrts]
    for refrt in commands:  # warm-up: the daemon started, the image's layers in the page cache
        _lifecycle(refrt, -1)
    samples: list[dict[str, list[float]]] = [{op: [] for op in OPS} for _ in commands]
    for n in range(runs):
        for i, refrt in enumerate(commands):
            for op, seconds in _lifecycle(refrt, n).items():
                samples[i][op].append(seconds)
    width = max(len(op) for op in OPS)
    print(f"{'step (median ms)':<{width}} " + " ".join(f"{'refrt ' + str(i + 1):>10}" for i in range(len(commands))))
    for op in OPS:
        print(f"{op:<{width}} " + " ".join(f"{statistics.median(s[op]) * 1e3:>10.0f}" for s in samples))
    for i, r in enumerate(refrts):
        print(f"refrt {i + 1}: {r}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ops", action="store_true", help="time each step of a container's life (see above)")
    parser.add_argument("--refrt", action="append", default=[], help="with --ops: a refrt command line (repeatable)")
    args = parser.parse_args()
    if args.ops:
        if not args.refrt:
            parser.error("--ops needs at least one --refrt command line")
        return ops_main(args.refrt, args.runs)
    for tool in ("hyperfine", "runc"):
        if shutil.which(tool) is None:
            print(f"bench_run: {tool} is not installed", file=sys.stderr)
            return 2
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        work = Path(tmp)
        # an installed refrt runs from cached bytecode: give it a cache outside the checkout
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        env["PYTHONPATH"] = str(REPO)
        root, bundle = prepare(work, env)
        refrt_cmd = f"{sys.executable} -m runtime --root {root} run --rm --network none busybox true"
        runc_cmd = f"runc --root {work / 'runc-state'} run --bundle {bundle} bench-{os.getpid()}"
        export = work / "hyperfine.json"
        subprocess.run(
            ["hyperfine", "--style", "basic", "--warmup", str(args.warmup), "--runs", str(args.runs),
             "--export-json", str(export), "-n", "refrt", refrt_cmd, "-n", "runc", runc_cmd],
            check=True, env=env, cwd=REPO,
        )
        results = {r["command"]: r for r in json.loads(export.read_text())["results"]}
    refrt, runc = results["refrt"], results["runc"]
    print()
    print(f"{'command':<8} {'median ms':>10} {'mean ms':>9} {'min ms':>8} {'max ms':>8}")
    for name, r in (("refrt", refrt), ("runc", runc)):
        print(f"{name:<8} {r['median'] * 1e3:>10.1f} {r['mean'] * 1e3:>9.1f} {r['min'] * 1e3:>8.1f} "
              f"{r['max'] * 1e3:>8.1f}")
    print(f"ratio refrt/runc (medians): {refrt['median'] / runc['median']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
