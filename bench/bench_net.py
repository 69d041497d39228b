#!/usr/bin/env python3
"""TCP through refrt networking: a published port (DNAT, incl. 127.0.0.1) vs the container's address directly.

Runs two busybox containers in a temporary refrt root: an echo server (``nc -ll -e cat``) for round-trip
latency and a source (``nc -ll -e dd if=/dev/zero bs=1M``) for bulk transfer, each published on 127.0.0.1. The
host-side client measures, side by side in one run:

- round trip: one connection, 1-byte ping-pong, median over ``--rounds`` exchanges (microseconds);
- bulk: time to read ``--mbytes`` MiB, median over ``--repeats`` connections (MiB/s);

through ``127.0.0.1:<published>`` and through ``<container ip>:<port>``, and prints the ratio.
Usage: ``python bench/bench_net.py [--rounds 2000] [--mbytes 64] [--repeats 5]`` (root needed).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def refrt(root: str, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "runtime", "--root", root, *args], capture_output=True,
                          text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"refrt {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def connect(addr: tuple[str, int], timeout: float = 10) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(addr, timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def round_trips(addr: tuple[str, int], rounds: int) -> float:
    """Median microseconds of a 1-byte exchange on one connection."""
    with connect(addr) as sock:
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise SystemExit("echo server closed the connection")
            samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def bulk(addr: tuple[str, int], size: int, repeats: int) -> float:
    """Median MiB/s reading ``size`` bytes from the source server."""
    rates = []
    for _ in range(repeats):
        with connect(addr) as sock:
            got = 0
            start = time.perf_counter()
            while got < size:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
            elapsed = time.perf_counter() - start
        if got < size:
            raise SystemExit(f"bulk source sent {got} of {size} bytes")
        rates.append(size / elapsed / (1 << 20))
    return statistics.median(rates)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--mbytes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size = args.mbytes << 20
    with tempfile.TemporaryDirectory(prefix="bench-net-") as root:
        refrt(root, "image", "bootstrap", "busybox")
        echo_port, bulk_port = free_port(), free_port()
        try:
            refrt(root, "run", "-d", "--name", "echo", "-p", f"127.0.0.1:{echo_port}:7", "busybox",
                  "nc", "-ll", "-p", "7", "-e", "cat")
            refrt(root, "run", "-d", "--name", "source", "-p", f"127.0.0.1:{bulk_port}:9", "busybox",
                  "nc", "-ll", "-p", "9", "-e", "dd", "if=/dev/zero", "bs=1M", f"count={args.mbytes}")
            ips = {}
            for name in ("echo", "source"):
                data = json.loads(refrt(root, "inspect", name))[0]
                ips[name] = data["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            paths = {
                "published 127.0.0.1": (("127.0.0.1", echo_port), ("127.0.0.1", bulk_port)),
                "container address": ((ips["echo"], 7), (ips["source"], 9)),
            }
            results = {}
            for label, (echo_addr, bulk_addr) in paths.items():
                round_trips(echo_addr, 50)  # warm up (ARP, conntrack)
                results[label] = (round_trips(echo_addr, args.rounds), bulk(bulk_addr, size, args.repeats))
        finally:
            subprocess.run([sys.executable, "-m", "runtime", "--root", root, "rm", "-f", "echo", "source"],
                           env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, check=False)
    print(f"{'path':<22}{'RTT median (us)':>18}{'bulk median (MiB/s)':>22}")
    for label, (rtt, rate) in results.items():
        print(f"{label:<22}{rtt:>18.1f}{rate:>22.1f}")
    direct, published = results["container address"], results["published 127.0.0.1"]
    print(f"{'published/direct':<22}{published[0] / direct[0]:>18.2f}{published[1] / direct[1]:>22.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
