"""Benchmark of the disposable-VM machinery: image build, cold boot to SSH, snapshot restore to SSH, provisioning,
and restore of the *warm* snapshot (refrt provisioned, busybox loaded, daemon up) to a usable runtime, split into
its steps (qemu start + incoming state, SSH, guest clock + refrt's daemon up), plus command latencies in the guest:
each over an SSH channel of its own, and through the command agent (conformance/targets/agent.py).

    .venv/bin/python bench/bench_vm.py [--runs 3] [--build]

Without ``--build`` the image build time is the one recorded when the cached image was built (``image.json``);
with it a fresh image is built into a temporary cache (2-3 minutes, the real apt mirror). Each other figure is the
median of ``--runs`` runs, measured side by side in one invocation; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
from conformance.drivers import refrt
from vm.image import BuildReport, BuiltImage, ensure_image
from vm.qemu import Machine, MachineConfig, Warmup, clock_fix_command, connect_ssh, detect_accel, ensure_golden

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


WARM_STEPS: dict[str, list[float]] = {}
REFRT_LATENCIES: dict[str, list[float]] = {}


def warm_restore(image: BuiltImage, golden_dir: Any, accel: str) -> float:
    """Restore the warm snapshot until refrt is usable (its daemon alive on its socket): the target's ``up()`` path."""
    machine = Machine(image, MachineConfig(), accel)
    client = shlex.join(refrt.remote_argv(refrt.harness_root()))
    try:
        start = time.monotonic()
        machine.start(golden_dir.disk, incoming=golden_dir.state)
        steps = {"qemu start + incoming state": time.monotonic() - start}
        mark = time.monotonic()
        session = connect_ssh(machine, 300)
        steps["SSH connect"] = time.monotonic() - mark
        mark = time.monotonic()
        # What the qemu target's up() runs: the clock fix and the check that refrt's daemon is up, in one exec.
        result = session.run(f"{clock_fix_command()} && {refrt.warm_check()}", timeout=120)
        steps["guest clock + refrt daemon up"] = time.monotonic() - mark
        ready = time.monotonic() - start
        if result.exit_status != 0:
            raise SystemExit(f"refrt is not usable in the restored guest: {result.stderr.strip()}")
        for name, seconds in steps.items():
            WARM_STEPS.setdefault(name, []).append(seconds)
        commands = {"true": None, "refrt ps -a -q": "ps -a -q", "refrt run --rm --network none busybox true":
                    "run --rm --network none busybox true", "refrt run --rm busybox true": "run --rm busybox true"}
        # Each command over a channel of its own (sshd's session, a shell, a new interpreter for refrt's client),
        # then through the command agent the qemu target uses (one process in the guest, a fork per command).
        # Measured in the first two restored clones only (5 of each per way): enough for a median, and the
        # restore figures are the point of the repeated runs.
        for way in ("channel", "agent") if len(REFRT_LATENCIES.get("true (channel)", [])) < 10 else ():
            session.use_agent = way == "agent"
            for name, args in commands.items():
                command = "true" if args is None else f"{client} {args}"
                for _ in range(5):
                    start = time.monotonic()
                    session.run(command, timeout=120)
                    REFRT_LATENCIES.setdefault(f"{name} ({way})", []).append(time.monotonic() - start)
        session.close()
        return ready
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
    parser.add_argument("--warm-only", action="store_true", help="only the warm snapshot figures (no cold boots)")
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
    if args.warm_only:
        args.runs, runs = 0, args.runs
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
    if args.warm_only:
        args.runs = runs
    warmup = Warmup(refrt.warm_key(), refrt.warm, refrt.warm_check())
    warm_seconds = timed(lambda: ensure_golden(image, MachineConfig(), accel, 600, warmup))
    rows.append(row("warm snapshot (refrt) made (0 when cached)", [warm_seconds]))
    warm_golden = ensure_golden(image, MachineConfig(), accel, 600, warmup)
    for key in ("restore_seconds", "warmup_seconds"):
        value = warm_golden.meta().get(key)
        if isinstance(value, float):
            rows.append(row(f"  when made: {key}", [value]))
    readies = [warm_restore(image, warm_golden, accel) for _ in range(args.runs)]
    rows.append(row(f"warm restore -> refrt ready ({accel})", readies))
    rows += [row(f"  step: {name}", values) for name, values in WARM_STEPS.items()]
    rows += [row(f"guest: {name}", values) for name, values in REFRT_LATENCIES.items()]
    print(tabulate(rows, headers=["measure", "runs", "median s", "min s", "max s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
