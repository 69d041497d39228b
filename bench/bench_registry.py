"""Push and pull of a ~50 MB image: refrt against ``skopeo copy``, side by side, on the same real registry.

    .venv/bin/python bench/bench_registry.py [--runs 5] [--size-mb 50]

The image has two random (incompressible) layers, one above the chunked-upload threshold and one below, so both
upload paths are measured. Each push goes to a fresh registry (a push to a registry that has the blobs measures
HEAD requests only); each pull goes into a fresh refrt root / OCI directory. Times are wall-clock and include
process start-up for both tools. refrt's pull also unpacks the layers (it has to, to run them); skopeo's copy
into ``oci:`` does not - both figures are printed so the difference is visible, not hidden.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from runtime.cli import Context  # noqa: E402
from runtime.paths import Paths  # noqa: E402
from runtime.registry import pull as registry_pull  # noqa: E402
from runtime.registry import push as registry_push  # noqa: E402
from runtime.store.store import Store  # noqa: E402

NAME = "bench/app:1"


def refrt(root: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFRT_")}
    subprocess.run(
        [sys.executable, "-m", "runtime", "--root", str(root), "--config", str(root / "cfg"), *args],
        check=True,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
    )


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


def timed(prepare: Callable[[], object], action: Callable[[object], None], runs: int) -> list[float]:
    """Run ``prepare`` (untimed) then ``action`` (timed) ``runs`` times."""
    times = []
    for _ in range(runs):
        state = prepare()
        start = time.perf_counter()
        action(state)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=50)
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        print("bench_registry: skopeo not found (install skopeo)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    registries: list[Registry] = []
    try:
        src_root = work / "src" / "root"
        src_root.mkdir(parents=True)
        size, nlayers = make_image(src_root, args.size_mb)

        # One registry holding the image, for the pulls and as skopeo's push source (same bytes, same digest).
        seed = Registry()
        seed.start()
        registries.append(seed)
        Store(Paths.resolve(str(src_root))).tag("src:1", f"{seed.host}/{NAME}")
        refrt(src_root, "push", f"{seed.host}/{NAME}")
        oci_src = work / "oci-src"
        skopeo("copy", "--src-tls-verify=false", f"docker://{seed.host}/{NAME}", f"oci:{oci_src}:app")

        def fresh_registry() -> Registry:
            reg = Registry()
            reg.start()
            registries.append(reg)
            return reg

        def refrt_push(state: object) -> None:
            assert isinstance(state, Registry)
            store = Store(Paths.resolve(str(src_root)))
            target = f"{state.host}/{NAME}"
            store.tag("src:1", target)
            refrt(src_root, "push", target)
            store.untag(target)
            state.stop()

        def api_push(state: object) -> None:
            assert isinstance(state, Registry)
            store = Store(Paths.resolve(str(src_root)))
            target = f"{state.host}/{NAME}"
            store.tag("src:1", target)
            registry_push(Context(Paths.resolve(str(src_root)), str(src_root / "cfg"), False), target)
            store.untag(target)
            state.stop()

        def skopeo_push(state: object) -> None:
            assert isinstance(state, Registry)
            skopeo("copy", "--dest-tls-verify=false", f"oci:{oci_src}:app", f"docker://{state.host}/{NAME}")
            state.stop()

        counter = iter(range(1_000_000))

        def fresh_dir() -> Path:
            path = work / f"pull-{next(counter)}"
            path.mkdir()
            return path

        def refrt_pull(state: object) -> None:
            assert isinstance(state, Path)
            refrt(state, "pull", f"{seed.host}/{NAME}")
            shutil.rmtree(state)

        def api_pull(state: object) -> None:
            assert isinstance(state, Path)
            registry_pull(Context(Paths.resolve(str(state)), str(state / "cfg"), False), f"{seed.host}/{NAME}")
            shutil.rmtree(state)

        def skopeo_pull(state: object) -> None:
            assert isinstance(state, Path)
            skopeo("copy", "--src-tls-verify=false", f"docker://{seed.host}/{NAME}", f"oci:{state / 'oci'}:app")
            shutil.rmtree(state)

        # Every push goes to a new registry (another host:port, or the same repository name), so the repo digests
        # earlier pushes recorded never turn an upload into a cross-repository mount.
        results = {
            "push": (
                timed(fresh_registry, refrt_push, args.runs),
                timed(fresh_registry, api_push, args.runs),
                timed(fresh_registry, skopeo_push, args.runs),
            ),
            "pull": (
                timed(fresh_dir, refrt_pull, args.runs),
                timed(fresh_dir, api_pull, args.runs),
                timed(fresh_dir, skopeo_pull, args.runs),
            ),
        }
        print(f"registry bench: {size / (1 << 20):.1f} MiB compressed in {nlayers} layers, {args.runs} runs each,")
        print("docker-registry 2.8 on 127.0.0.1, wall-clock medians including process start-up")
        print(f"{'op':<6}{'refrt CLI s':>12}{'refrt API s':>12}{'skopeo s':>10}{'CLI/skopeo':>12}{'API/skopeo':>12}")
        for op, (cli, api, theirs) in results.items():
            a, b, c = statistics.median(cli), statistics.median(api), statistics.median(theirs)
            print(f"{op:<6}{a:>12.3f}{b:>12.3f}{c:>10.3f}{a / c:>12.2f}{b / c:>12.2f}")
        print("refrt CLI: `python3 -m runtime push|pull` (interpreter start-up included); refrt API: the same")
        print("push/pull functions called in this process. refrt pull includes unpacking the layers; skopeo copy")
        print("to oci: does not.")
        return 0
    finally:
        for reg in registries:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
