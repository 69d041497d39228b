#!/usr/bin/env python3
"""Benchmark: ``refrt run --rm --network none busybox true`` against ``runc run`` on the same rootfs, one run.

Both start one container with fresh mount/PID/UTS/IPC/net namespaces over a busybox rootfs and wait for ``true``.
runc gets a ready bundle (no image resolution, no overlay, no monitor); refrt does its whole path (CLI start,
image lookup, overlay, cgroup, monitor, state files, --rm clean-up). hyperfine measures both, side by side, and
this prints medians and the ratio.

    sudo .venv/bin/python bench/bench_run.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
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
