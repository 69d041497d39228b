#!/usr/bin/env python3
"""Benchmark: ``refrt run --rm --network none busybox true`` through the daemon against ``runc run``, interleaved.

Both start one container with fresh namespaces over the same busybox rootfs (the bundle is set up by
``bench_run.prepare``). refrt goes its whole way: the thin client under ``python3 -I -S``, the daemon's
pre-imported worker, image lookup, overlay, cgroups, monitor, state files and the ``--rm`` clean-up. The two
commands alternate run by run, so a load change on the machine hits both alike; the medians and their ratio
are printed, with ``refrt ps`` (goal: 25 ms or less) and the interpreter's bare start for scale.

``--trace`` also runs the command line in this process, with every set-up step timed (CLI, monitor, container
init): where the time that is left goes.

``--spare`` measures the zygote's spare worker (:mod:`runtime.daemon.zygote`) instead: first in-process, how long a
child forked now takes to run its first step against how long a sleeping, already forked one takes to wake;
then end to end, two daemons side by side on two roots with the same busybox image, one with spares and one
started with ``REFRT_DAEMON_SPARE=0`` (every command forks its worker, as before), their commands interleaved:
``refrt ps``, ``refrt images``, ``run --rm``, and a pull of busybox (about 1 MiB) from a local docker-registry
into a fresh root whose daemon was started untimed just before (``skopeo copy`` of the same image beside it).

    sudo .venv/bin/python bench/bench_daemon.py [--runs 30] [--trace | --spare]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_run import REPO, prepare  # the sibling benchmark's set-up, not a copy

MAIN = REPO / "runtime" / "__main__.py"


def timed(argv: list[str]) -> float:
    """Wall time of one command in ms; it must succeed."""
    start = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    elapsed = (time.perf_counter() - start) * 1e3
    if result.returncode != 0:
        raise SystemExit(f"bench_daemon: {' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return elapsed


def interleaved(commands: dict[str, list[str]], runs: int, warmup: int) -> dict[str, list[float]]:
    for _ in range(warmup):
        for argv in commands.values():
            timed(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            times[name].append(timed(argv))
    return times


# -- --trace: the set-up steps, timed in this process ------------------------------------------------------------
TRACED = {
    "runtime.cli.containers": ["_create"],
    "runtime.container.lifecycle": ["create", "start"],
    "runtime.container.monitor": ["spawn", "build_plan", "_read_all"],
    "runtime.container.monitor.Monitor": ["_start_container", "_finish", "_teardown", "_auto_remove"],
    "runtime.container.monitor.OutputPump": ["pump_until_exit"],
    "runtime.container.hooks": ["network_attach", "network_detach"],
    "runtime.container.namespaces": ["fork_into_new_pid_namespace"],
    "runtime.container.init": ["setup_rootfs", "drop_privileges"],
    "runtime.container.state.Container": ["save_state"],
    "runtime.cgroups.v1.V1Driver": ["create"],
    "runtime.cgroups.v1.V1Cgroup": ["add", "remove", "kill_all"],
    "runtime.cgroups.v2.V2Driver": ["create"],
    "runtime.cgroups.v2.V2Cgroup": ["add", "remove", "kill_all"],
}


def _resolve(dotted: str) -> Any:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        with contextlib.suppress(ImportError):
            obj: Any = importlib.import_module(".".join(parts[:cut]))
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
    raise ImportError(dotted)


def trace(root: Path, runs: int) -> None:
    """Run the command line in this process (pre-imported, as the daemon's worker is) with the steps timed. The
    monitor and the container's init are forks of this process, so they report through an inherited pipe."""
    sys.path.insert(0, str(REPO))
    from runtime.cli import main, preload
    from runtime.container import init, monitor
    from runtime.daemon.zygote import preload as preload_all

    preload_all()
    report_r, report_w = os.pipe()
    os.set_blocking(report_r, False)

    def wrap(owner: Any, name: str, label: str) -> None:
        func = getattr(owner, name)

        @functools.wraps(func)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                with contextlib.suppress(OSError):
                    os.write(report_w, f"{label} {(time.perf_counter() - start) * 1e3:.3f}\n".encode())

        setattr(owner, name, timed_call)

    for dotted, names in TRACED.items():
        with contextlib.suppress(ImportError, AttributeError):
            owner = _resolve(dotted)
            for name in names:
                wrap(owner, name, f"{dotted.removeprefix('runtime.')}.{name}")
    close_except: Callable[[set[int | None]], None] = monitor._close_inherited_fds
    monitor._close_inherited_fds = lambda keep: close_except({*keep, report_w})
    init._close_other_fds = lambda keep: close_except({keep, report_w})
    argv = ["--root", str(root), "run", "--rm", "--network", "none", "busybox", "true"]
    steps: dict[str, list[float]] = defaultdict(list)
    totals = []
    for _ in range(runs + 2):
        preload()
        start = time.perf_counter()
        if main(argv) != 0:
            raise SystemExit("bench_daemon: the traced run failed")
        totals.append((time.perf_counter() - start) * 1e3)
        time.sleep(0.05)
        with contextlib.suppress(BlockingIOError):
            for line in os.read(report_r, 1 << 20).decode().splitlines():
                label, ms = line.rsplit(" ", 1)
                steps[label].append(float(ms))
    print(f"\nin-process run, steps (median ms over {runs + 2} runs; nested steps are included in their callers):")
    print(f"  {'whole command':<48} {statistics.median(totals):8.1f}")
    for label, values in sorted(steps.items(), key=lambda item: -statistics.median(item[1])):
        print(f"  {label:<48} {statistics.median(values):8.1f}")


# -- --spare: a worker forked per command against a spare that waits ---------------------------------------------
def wake_latencies(runs: int) -> tuple[list[float], list[float]]:
    """(fork → the child's first step, message → a sleeping spare's first step), in ms, interleaved, from a
    process preloaded as the zygote is."""
    import gc
    import socket

    sys.path.insert(0, str(REPO))
    from runtime.daemon import zygote

    zygote.preload()
    gc.collect()
    gc.freeze()
    forked: list[float] = []
    woken: list[float] = []
    for _ in range(runs):
        ready_r, ready_w = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # what a worker does first, then "running"
            os.setsid()
            os.write(ready_w, b"x")
            os._exit(0)
        os.read(ready_r, 1)
        forked.append((time.perf_counter() - start) * 1e3)
        os.waitpid(pid, 0)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            os.setsid()
            theirs.recv(1)
            os.write(ready_w, b"x")
            os._exit(0)
        time.sleep(0.02)  # the spare is asleep in recv by now
        start = time.perf_counter()
        ours.send(b"C")
        os.read(ready_r, 1)
        woken.append((time.perf_counter() - start) * 1e3)
        os.waitpid(pid, 0)
        for end in (ours, theirs):
            end.close()
        os.close(ready_r)
        os.close(ready_w)
        time.sleep(0.01)
    return forked, woken


def spare_comparison(work: Path, root: Path, env: dict[str, str], runs: int, warmup: int,
                     baseline: Path | None) -> dict[str, list[float]]:
    """Interleaved end-to-end times of the same commands through a daemon with spares and one without (or, with
    ``baseline``, one running that checkout's runtime: the code before a change)."""
    sys.path.insert(0, str(REPO))
    from conformance.services.registry import Registry

    python = [sys.executable, "-I", "-S", str(MAIN)]
    clients = {"spare": python, "fork": [*python[:-1], str((baseline or REPO) / "runtime" / "__main__.py")]}
    other = work / "root-fork"
    subprocess.run([sys.executable, "-m", "runtime", "--no-daemon", "--root", str(other), "image", "bootstrap",
                    "busybox"], check=True, env=env, cwd=REPO, capture_output=True)
    roots = {"spare": root, "fork": other}
    envs = {"spare": {**env, "REFRT_DAEMON_SPARE": "1"}, "fork": {**env, "REFRT_DAEMON_SPARE": "0"}}
    registry = Registry()
    registry.start()
    pulls = iter(range(1_000_000))
    daemons: list[subprocess.Popen[bytes]] = []

    def start_daemon(kind: str, at: Path) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*clients[kind], "--root", str(at), "daemon"], env=envs[kind],
                                stderr=subprocess.DEVNULL, start_new_session=True)
        daemons.append(proc)
        deadline = time.monotonic() + 30
        while subprocess.run([*clients[kind], "--root", str(at), "images", "-q"], env=envs[kind],
                             capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("bench_daemon: a daemon did not come up")
            time.sleep(0.1)
        time.sleep(0.05)  # quiet: its spare (if any) is forked
        return proc

    def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    image = f"{registry.host}/bench/busybox:1"
    try:
        subprocess.run([*python, "--no-daemon", "--root", str(root), "tag", "busybox", image], check=True, env=env)
        subprocess.run([*python, "--no-daemon", "--root", str(root), "push", image], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        for kind, at in roots.items():
            start_daemon(kind, at)

        def pull(kind: str) -> float:
            fresh = work / f"pull-{next(pulls)}"
            proc = start_daemon(kind, fresh)
            try:
                return timed([*clients[kind], "--root", str(fresh), "pull", image])
            finally:
                stop_daemon(proc)
                shutil.rmtree(fresh)

        def skopeo() -> float:
            fresh = work / f"oci-{next(pulls)}"
            try:
                return timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image}",
                              f"oci:{fresh}:app"])
            finally:
                shutil.rmtree(fresh, ignore_errors=True)

        cases: dict[str, Callable[[], float]] = {}
        for what, argv in (("ps", ["ps"]), ("images", ["images"]),
                           ("run --rm", ["run", "--rm", "--network", "none", "busybox", "true"])):
            for kind, at in roots.items():
                cases[f"{what} ({kind})"] = functools.partial(timed, [*clients[kind], "--root", str(at), *argv])
        for kind in roots:
            cases[f"pull 1 MiB ({kind})"] = functools.partial(pull, kind)
        if shutil.which("skopeo"):
            cases["skopeo copy 1 MiB"] = skopeo
        for _ in range(warmup):
            for case in cases.values():
                case()
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, case in cases.items():
                times[name].append(case())
                time.sleep(0.02)  # a user's pace: the zygote is quiet between commands
        return times
    finally:
        for proc in daemons:
            if proc.poll() is None:
                stop_daemon(proc)
        registry.stop()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--trace", action="store_true", help="also time the set-up steps in-process")
    mode.add_argument("--spare", action="store_true", help="the zygote's spare worker against a fork per command")
    parser.add_argument("--baseline", type=Path, help="with --spare: a checkout (git worktree) whose runtime is the "
                        "'fork' side, e.g. the commit before a change: before/after in one interleaved run")
    args = parser.parse_args()
    if args.spare:
        return main_spare(args.runs, args.warmup, args.baseline)
    if shutil.which("runc") is None:
        print("bench_daemon: runc is not installed", file=sys.stderr)
        return 2
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        work = Path(tmp)
        env["PYTHONPATH"] = str(REPO)
        root, bundle = prepare(work, env)
        python = [sys.executable, "-I", "-S"]
        refrt = [*python, str(MAIN), "--root", str(root)]
        daemon = subprocess.Popen([*refrt, "daemon"], stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while subprocess.run([*refrt, "ps", "-q"], capture_output=True, check=False).returncode != 0:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit("bench_daemon: the daemon did not come up")
                time.sleep(0.1)
            times = interleaved({
                "refrt": [*refrt, "run", "--rm", "--network", "none", "busybox", "true"],
                "runc": ["runc", "--root", str(work / "runc-state"), "run", "--bundle", str(bundle),
                         f"bench-{os.getpid()}"],
                "refrt ps": [*refrt, "ps"],
                "python -I -S": [*python, "-c", "pass"],
            }, args.runs, args.warmup)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        if args.trace:
            trace(root, args.runs)
    print(f"\n{'command':<14} {'median ms':>10} {'min ms':>8} {'max ms':>8}   ({args.runs} interleaved runs)")
    for name, values in times.items():
        print(f"{name:<14} {statistics.median(values):>10.1f} {min(values):>8.1f} {max(values):>8.1f}")
    ratio = statistics.median(times["refrt"]) / statistics.median(times["runc"])
    print(f"ratio refrt/runc (medians): {ratio:.2f}x   (goal 1.0x, at least 1.5x)")
    print(f"refrt ps: {statistics.median(times['refrt ps']):.1f} ms   (goal 25 ms or less)")
    return 0


def main_spare(runs: int, warmup: int, baseline: Path | None) -> int:
    print(f"load average at the start: {load()}")
    forked, woken = wake_latencies(runs)
    print(f"\n{'in-process, ms':<36} {'median':>8} {'p90':>8}   ({runs} interleaved runs)")
    for name, values in (("fork -> the child's first step", forked), ("message -> a spare's first step", woken)):
        print(f"{name:<36} {statistics.median(values):>8.2f} {statistics.quantiles(values, n=10)[-1]:>8.2f}")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        work = Path(tmp)
        root, _bundle = prepare(work, env)
        times = spare_comparison(work, root, env, runs, warmup, baseline)
    if baseline is not None:
        print(f"\n(fork) = the daemon and client of {baseline}, (spare) = this checkout")
    print(f"\n{'end to end':<24} {'median ms':>10} {'min ms':>8} {'max ms':>8}   ({runs} interleaved runs)")
    for name, values in times.items():
        print(f"{name:<24} {statistics.median(values):>10.1f} {min(values):>8.1f} {max(values):>8.1f}")
    print(f"load average at the end: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
