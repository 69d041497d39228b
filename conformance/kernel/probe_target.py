"""The live probes, as one program that runs ON THE TARGET (sent as ``python3 -`` over ``Target.run``).

What a kernel config cannot tell - whether a namespace can really be created here, whether overlayfs mounts,
whether a memory limit really kills, whether NAT rules load - is asked of the running kernel itself. The program
is standard library only and Python 3.9-compatible because it runs on whatever host or VM guest is the target.
Every probe runs in a forked child that unshares what it touches (mount or network namespace), so a probe killed
half-way leaves nothing behind; scratch cgroups are removed before the program exits. It prints one JSON object:
``{"kernel": ..., "config": {...}, "probes": {key: {"ok": bool, "evidence": str, "value": ...}}}``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)

CLONE_FLAGS = {
    "mount": 0x00020000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "user": 0x10000000,
    "pid": 0x20000000,
    "net": 0x40000000,
    "cgroup": 0x02000000,
    "time": 0x00000080,
}
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
CONFIG_CANDIDATES = ("/proc/config.gz", "/boot/config-{release}")
#: The number of lower layers tried at most when looking for overlayfs' limit (the kernel's is 500 today).
MAX_LOWERDIRS_TRIED = 1024
MEMORY_LIMIT = 16 << 20
PIDS_LIMIT = 4

Probe = dict[str, Any]


def _err(code: int) -> str:
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def libc_call(name: str, *args: Any) -> None:
    """Call a libc function that returns -1 on failure; raise OSError with its errno."""
    if getattr(LIBC, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, _err(code))


def in_child(work: Callable[[], Probe]) -> Probe:
    """Run ``work`` in a forked child and return what it reported; the child's namespaces die with it."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            report = work()
        except Exception as exc:  # report any failure as the probe's evidence
            report = {"ok": False, "evidence": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write_fd, "w") as out:
            out.write(json.dumps(report))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as inp:
        data = inp.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return {"ok": False, "evidence": f"probe child died (wait status {status})"}
    result: Probe = json.loads(data)
    return result


def sh(argv: list[str], stdin: str | None = None) -> tuple[int, str]:
    """Run a command; return its exit status and combined output (127 when the program is absent)."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]}: not installed"
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


# --- namespaces --------------------------------------------------------------------------------------------


def probe_namespace(kind: str) -> Probe:
    flag = CLONE_FLAGS[kind]
    name = "CLONE_NEW" + ("NS" if kind == "mount" else kind.upper())

    def work() -> Probe:
        libc_call("unshare", flag)
        if kind == "pid":  # the new pid namespace only exists once a child enters it
            pid = os.fork()
            if pid == 0:
                os._exit(0 if os.getpid() == 1 else 1)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                return {"ok": False, "evidence": f"unshare({name}) ok but first child is not pid 1"}
        return {"ok": True, "evidence": f"unshare({name}) in a forked child: ok"}

    result = in_child(work)
    if not result["ok"] and not result["evidence"].startswith("unshare"):
        result["evidence"] = f"unshare({name}) in a forked child: {result['evidence']}"
    if kind == "user":
        result = _user_ns_limits(result)
    return result


def _user_ns_limits(result: Probe) -> Probe:
    limit = _read("/proc/sys/user/max_user_namespaces")
    result["value"] = int(limit) if limit.isdigit() else None
    result["evidence"] += f"; /proc/sys/user/max_user_namespaces = {limit or 'absent'}"
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if clone:
        result["evidence"] += f"; kernel.unprivileged_userns_clone = {clone}"
    if limit == "0":
        result["ok"] = False
    return result


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


# --- overlayfs ---------------------------------------------------------------------------------------------


def _short_name(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return digits[i // 36] + digits[i % 36]


def _private_tmpfs(base: str) -> None:
    libc_call("unshare", CLONE_FLAGS["mount"])
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    libc_call("mount", b"tmpfs", base.encode(), b"tmpfs", 0, b"size=16m,mode=700")
    os.chdir(base)


def _mount_overlay(lowers: list[str]) -> int:
    """Mount ``merged`` over relative lowerdirs; 0 on success, else errno. Relative paths keep options short."""
    options = f"lowerdir={':'.join(lowers)},upperdir=upper,workdir=work".encode()
    if LIBC.mount(b"overlay", b"merged", b"overlay", 0, options) != 0:
        return ctypes.get_errno() or errno.EINVAL
    libc_call("umount2", b"merged", MNT_DETACH)
    return 0


def probe_overlay() -> tuple[Probe, Probe]:
    base = tempfile.mkdtemp(prefix="conformance-overlay-")

    def work() -> Probe:
        _private_tmpfs(base)
        for d in ("upper", "work", "merged"):
            os.mkdir(d)
        for i in range(MAX_LOWERDIRS_TRIED):
            os.mkdir(_short_name(i))
        with open(os.path.join(_short_name(0), "f"), "w") as f:
            f.write("lower")
        options = f"lowerdir={_short_name(0)},upperdir=upper,workdir=work".encode()
        try:
            libc_call("mount", b"overlay", b"merged", b"overlay", 0, options)
        except OSError as exc:
            return {"ok": False, "evidence": f"mount -t overlay -o {options.decode()}: {exc.strerror}"}
        with open("merged/f") as f:
            seen = f.read()
        with open("merged/g", "w") as f:
            f.write("upper")
        copied_up = os.path.exists("upper/g")
        libc_call("umount2", b"merged", MNT_DETACH)
        ok = seen == "lower" and copied_up
        evidence = (
            f"mount -t overlay -o {options.decode()} on tmpfs in a private mount ns: "
            f"lower file read {'ok' if seen == 'lower' else 'WRONG'}, write landed in upper: {copied_up}"
        )
        good, bad = 1, MAX_LOWERDIRS_TRIED + 1
        bad_errno = 0
        while bad - good > 1:
            mid = (good + bad) // 2
            code = _mount_overlay([_short_name(i) for i in range(mid)])
            if code == 0:
                good = mid
            else:
                bad, bad_errno = mid, code
        if bad > MAX_LOWERDIRS_TRIED:
            limit_note = f"{good} lowerdirs mounted (largest tried)"
        else:
            limit_note = f"{good} lowerdirs mounted, {bad} refused with {_err(bad_errno)}"
        return {"ok": ok, "evidence": evidence, "max": good, "max_evidence": limit_note + " (binary search)"}

    try:
        result = in_child(work)
    finally:
        os.rmdir(base)
    main = {"ok": result["ok"], "evidence": result["evidence"]}
    if "max" in result:
        limit = {"ok": True, "evidence": result["max_evidence"], "value": result["max"]}
    else:
        limit = {"ok": False, "evidence": "overlay did not mount: " + result["evidence"], "value": 0}
    return main, limit


# --- cgroups -----------------------------------------------------------------------------------------------

CONTROLLER_KEYS = ("memory", "pids", "cpu", "cpuset", "io", "blkio", "devices", "freezer", "hugetlb")


def cgroup_mounts() -> tuple[dict[str, str], list[str]]:
    """v1 controller → mount point, and the cgroup2 mount points, from /proc/mounts."""
    known = set()
    for line in _read("/proc/cgroups").splitlines():
        if not line.startswith("#"):
            known.add(line.split()[0])
    v1: dict[str, str] = {}
    v2: list[str] = []
    for line in _read("/proc/mounts").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            v2.append(fields[1])
        elif fields[2] == "cgroup":
            for opt in fields[3].split(","):
                if opt in known:
                    v1.setdefault(opt, fields[1])
    return v1, v2


def _v2_builtin(name: str, v2_root: str, config_text: str) -> Probe:
    """cgroup v2 has no devices or freezer controller file: devices is a BPF program, the freezer is core."""
    if not v2_root:
        return {"ok": False, "evidence": f"v2 {name}: no cgroup2 mount"}
    if name == "freezer":  # cgroup.freeze exists in every non-root cgroup since Linux 5.2
        children = sorted(e.path for e in os.scandir(v2_root) if e.is_dir())
        found = next((d for d in children if os.path.exists(os.path.join(d, "cgroup.freeze"))), "")
        if found:
            return {"ok": True, "evidence": f"v2 freezer: {found}/cgroup.freeze exists"}
        where = f"{len(children)} child cgroups of {v2_root}"
        return {"ok": False, "evidence": f"v2 freezer: no cgroup.freeze in {where} (core since Linux 5.2)"}
    bpf = "CONFIG_CGROUP_BPF=y" in config_text.splitlines()
    what = "CONFIG_CGROUP_BPF=y" if bpf else "CONFIG_CGROUP_BPF not set or config unavailable"
    return {"ok": bpf, "evidence": f"v2 devices: controlled by BPF programs; {what} in the kernel config"}


def probe_cgroups(config_text: str = "") -> dict[str, Probe]:
    v1, v2 = cgroup_mounts()
    out: dict[str, Probe] = {}
    v2_root = "/sys/fs/cgroup" if "/sys/fs/cgroup" in v2 else (v2[0] if v2 else "")
    available = _read(os.path.join(v2_root, "cgroup.controllers")).split() if v2_root else []
    delegated = _read(os.path.join(v2_root, "cgroup.subtree_control")).split() if v2_root else []
    v1_desc = ", ".join(f"{c}@{m}" for c, m in sorted(v1.items())) or "none"
    v2_desc = (
        f"cgroup2 at {v2_root} (cgroup.controllers: {' '.join(available) or 'none'}; "
        f"cgroup.subtree_control: {' '.join(delegated) or 'none'})"
        if v2_root
        else "no cgroup2 mount"
    )
    evidence = f"/proc/mounts: v1 controllers {v1_desc}; {v2_desc}"
    layout = "hybrid" if v1 and v2 else ("v1" if v1 else ("v2" if v2 else "none"))
    out["cgroup.v1"] = {"ok": bool(v1), "evidence": f"/proc/mounts: v1 controllers {v1_desc}", "value": sorted(v1)}
    out["cgroup.v2"] = {"ok": bool(v2), "evidence": f"/proc/mounts: {v2_desc}", "value": available}
    out["cgroup.hybrid"] = {"ok": layout == "hybrid", "evidence": evidence, "value": layout}
    enabled = {}
    for line in _read("/proc/cgroups").splitlines():
        f = line.split()
        if len(f) == 4 and not line.startswith("#"):
            enabled[f[0]] = f[3] == "1"
    for name in CONTROLLER_KEYS:
        if name != "io":
            ok = name in v1 and enabled.get(name, False)
            where = f"mounted at {v1[name]}" if name in v1 else "not mounted as a v1 hierarchy"
            state = "enabled" if enabled.get(name) else "disabled or unknown"
            out[f"cgroup.v1.{name}"] = {"ok": ok, "evidence": f"v1 {name}: {where}, {state} in /proc/cgroups"}
        if name in ("devices", "freezer"):
            out[f"cgroup.v2.{name}"] = _v2_builtin(name, v2_root, config_text)
        elif name != "blkio":
            ok = name in available
            out[f"cgroup.v2.{name}"] = {
                "ok": ok,
                "evidence": f"v2 {name}: {'listed' if ok else 'not listed'} in {v2_desc}",
                "value": {"available": ok, "delegated": name in delegated},
            }
    out["cgroup.memory.enforced"] = enforce_probe("memory", v1, v2_root, available, delegated)
    out["cgroup.pids.enforced"] = enforce_probe("pids", v1, v2_root, available, delegated)
    return out


def enforce_probe(
    controller: str, v1: dict[str, str], v2_root: str, available: list[str], delegated: list[str]
) -> Probe:
    """Make a scratch cgroup with a tight limit, run a child that exceeds it, see it stopped, remove the cgroup."""
    if controller in available:
        note = ""
        if controller not in delegated:
            with open(os.path.join(v2_root, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{controller}")
            note = f" (enabled +{controller} in {v2_root}/cgroup.subtree_control)"
        parent, version = v2_root, "v2"
    elif controller in v1:
        parent, version, note = v1[controller], "v1", ""
    else:
        return {"ok": False, "evidence": f"no cgroup hierarchy offers the {controller} controller"}
    path = os.path.join(parent, f"conformance-probe-{os.getpid()}-{controller}")
    os.mkdir(path)
    try:
        result = _memory_limit_probe(path, version) if controller == "memory" else _pids_limit_probe(path, version)
    finally:
        _remove_cgroup(path)
    result["evidence"] = f"{version} scratch cgroup {path}: {result['evidence']}{note}; removed"
    return result


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _join_and(procs: str, work: Callable[[], int]) -> int:
    """Fork a child that joins the cgroup and runs ``work``; return its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            _write(procs, str(os.getpid()))
            code = work()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _memory_limit_probe(path: str, version: str) -> Probe:
    if version == "v1":
        _write(os.path.join(path, "memory.limit_in_bytes"), str(MEMORY_LIMIT))
        if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
            _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(MEMORY_LIMIT))
    else:
        _write(os.path.join(path, "memory.max"), str(MEMORY_LIMIT))
        if os.path.exists(os.path.join(path, "memory.swap.max")):
            _write(os.path.join(path, "memory.swap.max"), "0")

    def hog() -> int:
        buf = bytearray(MEMORY_LIMIT * 4)
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        return 0

    status = _join_and(os.path.join(path, "cgroup.procs"), hog)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    what = "killed by SIGKILL" if killed else f"survived (wait status {status})"
    return {
        "ok": killed,
        "evidence": f"child touching {MEMORY_LIMIT * 4 >> 20} MiB under a {MEMORY_LIMIT >> 20} MiB limit: {what}",
    }


def _pids_limit_probe(path: str, version: str) -> Probe:
    _write(os.path.join(path, "pids.max"), str(PIDS_LIMIT))

    def forker() -> int:
        hold_r, hold_w = os.pipe()
        children = []
        refused = False
        for _ in range(PIDS_LIMIT * 2):
            try:
                pid = os.fork()
            except OSError:
                refused = True
                break
            if pid == 0:
                os.close(hold_w)
                os.read(hold_r, 1)
                os._exit(0)
            children.append(pid)
        os.close(hold_w)
        for pid in children:
            os.waitpid(pid, 0)
        return 10 + len(children) if refused else 0

    status = _join_and(os.path.join(path, "cgroup.procs"), forker)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code >= 10:
        return {"ok": True, "evidence": f"pids.max={PIDS_LIMIT}: fork refused after {code - 10} children"}
    return {"ok": False, "evidence": f"pids.max={PIDS_LIMIT}: {PIDS_LIMIT * 2} forks all succeeded (code {code})"}


def _remove_cgroup(path: str) -> None:
    for _ in range(200):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.01)
    os.rmdir(path)


# --- network -----------------------------------------------------------------------------------------------

NFT_NAT_RULESET = (
    "table ip conformance_probe {\n"
    "  chain post { type nat hook postrouting priority 100; policy accept; "
    "ip saddr 10.199.0.0/24 masquerade; }\n"
    "}\n"
)


def probe_network() -> dict[str, Probe]:
    """veth, bridge, iptables NAT and nft NAT, all inside a fresh network namespace that dies with the child."""

    def step(argvs: list[list[str]], stdin: str | None = None) -> Probe:
        shown = []
        for argv in argvs:
            code, output = sh(argv, stdin)
            shown.append(f"`{' '.join(argv)}` -> {code}" + (f": {output[-200:]}" if code else ""))
            if code:
                return {"ok": False, "evidence": "; ".join(shown)}
        return {"ok": True, "evidence": "in a scratch netns: " + "; ".join(shown)}

    def work() -> Probe:
        libc_call("unshare", CLONE_FLAGS["net"])
        res: Probe = {}
        res["net.veth"] = step(
            [["ip", "link", "add", "cfprobe0", "type", "veth", "peer", "name", "cfprobe1"],
             ["ip", "link", "set", "cfprobe0", "up"]]
        )
        res["net.bridge"] = step(
            [["ip", "link", "add", "cfprobebr", "type", "bridge"], ["ip", "link", "set", "cfprobebr", "up"]]
            + ([["ip", "link", "set", "cfprobe1", "master", "cfprobebr"]] if res["net.veth"]["ok"] else [])
        )
        nat = step(
            [["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.199.0.0/24", "-j", "MASQUERADE"],
             ["iptables", "-t", "nat", "-C", "POSTROUTING", "-s", "10.199.0.0/24", "-j", "MASQUERADE"]]
        )
        nat["evidence"] += f" [{sh(['iptables', '-V'])[1]}]"
        res["net.iptables_nat"] = nat
        res["net.nft_nat"] = step(
            [["nft", "-f", "-"], ["nft", "list", "table", "ip", "conformance_probe"]], stdin=NFT_NAT_RULESET
        )
        return {"ok": True, "evidence": "", "results": res}

    result = in_child(work)
    if "results" not in result:
        failed = {"ok": False, "evidence": "unshare(CLONE_NEWNET) failed: " + result["evidence"]}
        return {k: dict(failed) for k in ("net.veth", "net.bridge", "net.iptables_nat", "net.nft_nat")}
    results: dict[str, Probe] = result["results"]
    return results


# --- seccomp, kvm ------------------------------------------------------------------------------------------


def probe_seccomp() -> Probe:
    lines = _read("/proc/self/status").splitlines()
    status_line = next((line for line in lines if line.startswith("Seccomp:")), "")
    if not status_line:
        return {"ok": False, "evidence": "/proc/self/status has no Seccomp: line (CONFIG_SECCOMP off)"}
    mode = int(status_line.split()[1])

    def work() -> Probe:
        rc = LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, None, 0, 0)
        code = ctypes.get_errno()
        # A NULL filter program is rejected with EFAULT only when filter mode exists at all.
        ok = rc != 0 and code == errno.EFAULT
        return {"ok": ok, "evidence": f"prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, NULL) -> {_err(code)}"}

    result = in_child(work)
    names = {0: "disabled", 1: "strict", 2: "filter"}
    shown = f"/proc/self/status Seccomp: {mode} (probe's mode: {names.get(mode)})"
    result["evidence"] = f"{shown}; {result['evidence']}"
    result["value"] = names.get(mode, str(mode))
    return result


def probe_kvm() -> Probe:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return {"ok": False, "evidence": f"open /dev/kvm: {exc.strerror}"}
    try:
        api = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
        return {"ok": api == 12, "evidence": f"/dev/kvm: KVM_GET_API_VERSION = {api}, KVM_CREATE_VM ok", "value": api}
    except OSError as exc:
        return {"ok": False, "evidence": f"/dev/kvm opened but ioctl failed: {exc.strerror}"}
    finally:
        os.close(fd)


# --- kernel config -----------------------------------------------------------------------------------------


def read_config(release: str) -> dict[str, Any]:
    tried = []
    for candidate in CONFIG_CANDIDATES:
        path = candidate.format(release=release)
        tried.append(path)
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt") as f:
                    return {"source": path, "text": f.read()}
            with open(path) as f:
                return {"source": path, "text": f.read()}
        except OSError:
            continue
    return {"source": None, "tried": tried}


def main() -> int:
    started = time.monotonic()
    release = os.uname().release
    probes: dict[str, Probe] = {}
    for kind in ("mount", "pid", "net", "ipc", "uts", "user", "cgroup", "time"):
        probes[f"ns.{kind}"] = probe_namespace(kind)
    config = read_config(release)
    probes.update(probe_cgroups(config.get("text", "")))
    probes["overlay"], probes["overlay.max_lowerdirs"] = probe_overlay()
    probes.update(probe_network())
    probes["seccomp"] = probe_seccomp()
    probes["kvm"] = probe_kvm()
    probes["kernel"] = {"ok": True, "evidence": "uname -r", "value": release}
    report = {
        "kernel": {"release": release, "machine": os.uname().machine},
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "config": config,
        "probes": probes,
        "seconds": round(time.monotonic() - started, 3),
    }
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
