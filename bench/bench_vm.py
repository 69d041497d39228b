"""Benchmark of the disposable-VM machinery: image build, cold boot to SSH, snapshot restore to SSH, provisioning.

    .venv/bin/python bench/bench_vm.py [--runs 3] [--build]

Without ``--build`` the image build time is the one recorded when the cached image was built (``image.json``);
with it a fresh image is built into a temporary cache (2-3 minutes, the real apt mirror). Each other figure is the
median of ``--runs`` runs, measured side by side in one invocation; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime
from vm.image import BuildReport, BuiltImage, ensure_image
from vm.qemu import Machine, MachineConfig, connect_ssh, detect_accel, ensure_golden

BUSYBOX = Path("/bin/busybox")
LATENCY_RUNS = 20
LATENCIES: list[float] = []


def timed(action: Callable[[], Any]) -> float:
    start = time.monotonic()
    action()
    return time.monotonic() - start


def cold_boot(image: BuiltImage, accel: str) -> float:
    machine = Machine(image, MachineConfig(), accel)
    try:
        start = time.monotonic()
        machine.start(image.disk)
        connect_ssh(machine, 600).close()
        return time.monotonic() - start
    finally:
        machine.destroy()


def restore(image: BuiltImage, accel: str, provision: bool) -> tuple[float, float | None]:
    golden = ensure_golden(image, MachineConfig(), accel, 600)
    machine = Machine(image, MachineConfig(), accel)
    try:
        start = time.monotonic()
        machine.start(golden.disk, incoming=golden.state)
        session = connect_ssh(machine, 300)
        restored = time.monotonic() - start
        provisioned = None
        for _ in range(LATENCY_RUNS):
            LATENCIES.append(timed(lambda: session.run("true")))
        if provision:
            package = Path(runtime.__file__).parent

            def provision_once() -> None:
                session.put(package, "/opt/bench/runtime")
                session.put(BUSYBOX, "/opt/bench/busybox")

            provisioned = timed(provision_once)
        session.close()
        return restored, provisioned
    finally:
        machine.destroy()


def row(name: str, values: list[float]) -> list[str]:
    if not values:
        return [name, "0", "-", "-", "-"]
    return [name, str(len(values)), f"{statistics.median(values):.2f}", f"{min(values):.2f}", f"{max(values):.2f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--build", action="store_true", help="build a fresh image in a temporary cache")
    args = parser.parse_args()
    rows = []
    if args.build:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["CONFORMANCE_VM_CACHE"] = cache
            report = BuildReport()
            seconds = timed(lambda: ensure_image(report=report))
            del os.environ["CONFORMANCE_VM_CACHE"]
        rows.append(row("image build (fresh)", [seconds]))
        rows += [row(f"  step: {name}", [value]) for name, value in report.steps]
    image = ensure_image()
    if not args.build:
        steps = json.loads((image.directory / "image.json").read_text()).get("steps", {})
        if steps:
            rows.append(row("image build (recorded)", [sum(steps.values())]))
    accel = detect_accel(image)
    golden_seconds = timed(lambda: ensure_golden(image, MachineConfig(), accel, 600))
    rows.append(row("golden snapshot (0 when cached)", [golden_seconds]))
    rows.append(row(f"cold boot -> SSH ({accel})", [cold_boot(image, accel) for _ in range(args.runs)]))
    restores, provisions = [], []
    for _ in range(args.runs):
        restored, provisioned = restore(image, accel, provision=True)
        restores.append(restored)
        if provisioned is not None:
            provisions.append(provisioned)
    rows.append(row(f"snapshot restore -> SSH ({accel})", restores))
    rows.append(row("provision runtime/ + busybox (SFTP)", provisions))
    rows.append(row("run('true') over the shared connection", LATENCIES))
    print(tabulate(rows, headers=["measure", "runs", "median s", "min s", "max s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
