"""Push and pull of a ~50 MiB image: refrt against ``skopeo copy``, side by side, on the same real registry.

    .venv/bin/python bench/bench_registry.py [--runs 9] [--size-mb 50]

The image has two random (incompressible) layers of about 4/5 and 1/5 of the size, gzip level 1 as refrt makes them
(random data deflates to stored blocks: the unpack is mostly copying, the hashing is the work). Each push goes to a
fresh registry (a push to a registry that has the blobs measures HEAD requests only); each pull goes into a fresh
refrt root / OCI directory. Times are wall-clock medians and include process start-up for every tool.

Fairness: one registry (docker-registry 2.8 on 127.0.0.1) serves every pull; the cases take turns run by run, the
starting case rotating; one untimed warm-up round of every case comes first (page cache of the registry's blobs
and of the tools' binaries, the daemon's code); dirty pages and discards of the previous case are written out
untimed before each timed run (``sync``); the load average is printed at the start and the end of each phase, since
this machine is shared and a loaded run differs from a quiet one.

What each side does:
- ``refrt`` (daemon): the CLI as users run it (the lean thin client of ``bin/refrt``), handing the command to the root's
  daemon, which is already running (started untimed before each run, as a user's daemon would be, stopped after).
- ``refrt --no-daemon``: the same command line in a fresh interpreter that imports the runtime and does the work.
- refrt pull = download, the blob's sha256 checked against the manifest, *and* the layer unpacked into the store
  (gunzip with gzip's CRC-32 and length checks, the tar's sha256 checked against the config's diff_id), ready to
  run. Per layer one thread receives, hashes and writes the blob while another inflates, hashes and unpacks it;
  layers three at a time. The blob (kept for push and save) and files of 1 MiB or more are written with O_DIRECT,
  around the page cache; nothing is fsynced (docker's policy: the store stays consistent through atomic renames).
- ``skopeo`` pull = ``skopeo copy docker://... oci:DIR``: download and sha256 checks, each blob written through the
  page cache and fsynced before its rename; the layers left packed (no gunzip, no diff_id check, no unpack).
- ``skopeo+umoci`` pull = the same, then ``umoci unpack`` into a bundle: the work refrt's pull includes.
The acceptance is refrt (daemon) <= 1.0x skopeo for push and for pull (refrt unpacking, skopeo not).

Bytes written decide much of a pull here: refrt writes the compressed blob it keeps and the unpacked layer, twice
what skopeo writes; skopeo+umoci writes three times. On the VMs this project runs on, a new file's page-cache pages
can cost about 2 ms per MiB the first time (guest memory handed back to the host is faulted in again), ten times an
overwrite in place - which is why refrt writes its bulk data with O_DIRECT (``REFRT_DIRECT_IO=0`` turns that off).
Push: refrt streams each layer from its blob file in one PUT, layers in parallel; skopeo reads the OCI layout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conformance.services.registry import Registry  # noqa: E402
from runtime.paths import Paths  # noqa: E402
from runtime.store.store import Store  # noqa: E402

NAME = "bench/app:1"


def refrt(root: Path, *args: str, daemon: bool = True) -> None:
    """The lean thin client (``python3 -I -S runtime/__main__.py``, as ``bin/refrt`` and the conformance driver run
    it; named with this interpreter, since ``env python3`` may find a slow version-manager shim first) or, without
    the daemon, the runtime in this interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    lean = [sys.executable, "-I", "-S", str(REPO / "runtime" / "__main__.py")]
    command = lean if daemon else [sys.executable, "-m", "runtime", "--no-daemon"]
    subprocess.run(
        [*command, "--root", str(root), "--config", str(root / "cfg"), *args],
        check=True,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def start_daemon(root: Path) -> None:
    """Any command through the thin client starts the root's daemon on demand (untimed here)."""
    refrt(root, "images")


def stop_daemon(root: Path) -> None:
    """Stop the daemon of ``root`` by the pid in its pidfile, and wait until it is gone."""
    try:
        pid = int((root / "run" / "refrt-daemon.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, stdout=subprocess.DEVNULL)


def make_image(root: Path, size_mb: int) -> tuple[int, int]:
    """Two random layers (about 4/5 and 1/5 of ``size_mb``) in a refrt store under the neutral tag ``src:1``."""
    store = Store(Paths.resolve(str(root)))
    layers = []
    for i, share in enumerate((0.8, 0.2)):
        tree = root.parent / f"tree{i}"
        tree.mkdir()
        (tree / f"random{i}").write_bytes(os.urandom(int(size_mb * share * (1 << 20))))
        layer = store.add_layer_from_dir(tree)
        assert layer is not None
        layers.append(layer)
        shutil.rmtree(tree)
    image = store.commit_image({"config": {"Cmd": ["/bin/true"]}}, layers, ["src:1"])
    return sum(store.blobs.size(layer.digest) for layer in image.layers), len(image.layers)


def interleaved(cases: dict[str, tuple[Callable[[], object], Callable[[object], None], Callable[[object], None]]],
                runs: int) -> dict[str, list[float]]:
    """Each case is (prepare, timed action, cleanup); the cases take turns run by run, so a load peak on this
    shared machine hits all of them alike rather than one, and the starting case rotates."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for run in range(-1, runs):  # round -1: the untimed warm-up
        # Each round starts with another case: none always follows the same neighbour's cleanup.
        for name in names[run % len(names) :] + names[: run % len(names)]:
            prepare, action, cleanup = cases[name]
            state = prepare()
            # The previous case's deletions (discards on this ext4) and dirty pages are written out untimed, so no
            # case pays for the one before it.
            os.sync()
            start = time.perf_counter()
            action(state)
            if run >= 0:
                times[name].append(time.perf_counter() - start)
            cleanup(state)
    return times


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--size-mb", type=int, default=50)
    args = parser.parse_args()
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            print(f"bench_registry: {tool} not found (install {tool})", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    registries: list[Registry] = []
    daemon_roots: list[Path] = []
    try:
        src_root = work / "src" / "root"
        src_root.mkdir(parents=True)
        size, nlayers = make_image(src_root, args.size_mb)

        # One registry holding the image, for the pulls and as skopeo's push source (same bytes, same digest).
        seed = Registry()
        seed.start()
        registries.append(seed)
        Store(Paths.resolve(str(src_root))).tag("src:1", f"{seed.host}/{NAME}")
        refrt(src_root, "push", f"{seed.host}/{NAME}", daemon=False)
        oci_src = work / "oci-src"
        skopeo("copy", "--src-tls-verify=false", f"docker://{seed.host}/{NAME}", f"oci:{oci_src}:app")
        daemon_roots.append(src_root)
        start_daemon(src_root)

        def fresh_registry() -> object:
            reg = Registry()
            reg.start()
            registries.append(reg)
            return reg

        def stop_registry(state: object) -> None:
            assert isinstance(state, Registry)
            state.stop()

        def refrt_push(daemon: bool) -> Callable[[object], None]:
            def push(state: object) -> None:
                assert isinstance(state, Registry)
                store = Store(Paths.resolve(str(src_root)))
                target = f"{state.host}/{NAME}"
                store.tag("src:1", target)
                refrt(src_root, "push", target, daemon=daemon)
                store.untag(target)

            return push

        def skopeo_push(state: object) -> None:
            assert isinstance(state, Registry)
            skopeo("copy", "--dest-tls-verify=false", f"oci:{oci_src}:app", f"docker://{state.host}/{NAME}")

        counter = iter(range(1_000_000))

        def fresh_dir() -> object:
            path = work / f"pull-{next(counter)}"
            path.mkdir()
            return path

        def fresh_root_with_daemon() -> object:
            path = fresh_dir()
            assert isinstance(path, Path)
            daemon_roots.append(path)
            start_daemon(path)
            return path

        def remove_dir(state: object) -> None:
            assert isinstance(state, Path)
            stop_daemon(state)
            shutil.rmtree(state)

        def refrt_pull(daemon: bool) -> Callable[[object], None]:
            def pull(state: object) -> None:
                assert isinstance(state, Path)
                refrt(state, "pull", f"{seed.host}/{NAME}", daemon=daemon)

            return pull

        def skopeo_pull(state: object) -> None:
            assert isinstance(state, Path)
            skopeo("copy", "--src-tls-verify=false", f"docker://{seed.host}/{NAME}", f"oci:{state / 'oci'}:app")

        def skopeo_pull_unpack(state: object) -> None:
            assert isinstance(state, Path)
            skopeo_pull(state)
            subprocess.run(["umoci", "unpack", "--image", f"{state / 'oci'}:app", str(state / "bundle")],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        # Every push goes to a new registry (another host:port), so the repo digests earlier pushes recorded never
        # turn an upload into a cross-repository mount.
        loads = {"push": load()}
        push_times = interleaved({
            "refrt": (fresh_registry, refrt_push(True), stop_registry),
            "refrt --no-daemon": (fresh_registry, refrt_push(False), stop_registry),
            "skopeo": (fresh_registry, skopeo_push, stop_registry),
        }, args.runs)
        loads["push"] += f" -> {load()}"
        loads["pull"] = load()
        pull_times = interleaved({
            "refrt": (fresh_root_with_daemon, refrt_pull(True), remove_dir),
            "refrt --no-daemon": (fresh_dir, refrt_pull(False), remove_dir),
            "skopeo": (fresh_dir, skopeo_pull, remove_dir),
            "skopeo+umoci": (fresh_dir, skopeo_pull_unpack, remove_dir),
        }, args.runs)
        loads["pull"] += f" -> {load()}"
        print(f"registry bench: {size / (1 << 20):.1f} MiB compressed in {nlayers} layers, {args.runs} runs each after"
              " a warm-up round,")
        print("docker-registry 2.8 on 127.0.0.1, wall-clock medians (min-max) including process start-up;"
              f" {os.cpu_count()} CPUs")
        verdicts = []
        for op, times in (("push", push_times), ("pull", pull_times)):
            print(f"{op}: load average (1, 5, 15 min) {loads[op]}")
            base = statistics.median(times["skopeo"])
            for name, values in times.items():
                median = statistics.median(values)
                print(f"{op:<5} {name:<18} {median:7.3f} s ({min(values):.3f}-{max(values):.3f})"
                      f"  {median / base:5.2f}x skopeo")
            verdicts.append((op, statistics.median(times["refrt"]) / base))
        print("refrt pull: download, blob sha256, gunzip (CRC-32), tar sha256 = diff_id, blob kept and layer unpacked"
              " (ready to run);")
        print("  blobs and files >= 1 MiB written with O_DIRECT, no fsync. skopeo copy to oci: download, blob sha256,"
              " each blob")
        print("  fsynced, layers left packed. skopeo+umoci adds `umoci unpack` of the copied image: the work refrt's"
              " pull does.")
        for op, ratio in verdicts:
            print(f"{op}: refrt/skopeo = {ratio:.2f} ({'within' if ratio <= 1.0 else 'OVER'} the 1.0x target)")
        return 0
    finally:
        for root in daemon_roots:
            stop_daemon(root)
        for reg in registries:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
