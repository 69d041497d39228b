"""refrt's security defaults, as docker's: the seccomp filter, keyrings, no_new_privs, --security-opt.

Probes that busybox cannot make run secprobe, built static from the C source kept in suites/security.yaml (one
copy of it). The compiler's argument comparisons are checked on the real kernel in forked children.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from runtime import syscalls
from runtime.container import capabilities, seccomp
from runtime.container.seccomp import kernel
from runtime.container.seccomp.compile import compile_profile
from runtime.container.seccomp.profile import DEFAULT, load_json
from tests.runtime.container.conftest import Refrt, unique

REPO = Path(__file__).resolve().parents[3]
REFUSED = ("unshare-user", "clone-newuser", "add_key", "perf_event_open", "userfaultfd", "personality", "vsock",
           "io_uring_setup")


@pytest.fixture(scope="module")
def secprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: scripts/apt/security.txt lists it")
    suite = yaml.safe_load((REPO / "suites" / "security.yaml").read_text())
    script = next(step["run"] for case in suite["cases"] for step in case.get("setup", []) if "secprobe.c" in
                  step.get("run", "") and "<<'EOF'" in step["run"])
    source = re.search(r"<<'EOF'\n(.*?)\nEOF", script, re.S)
    assert source is not None
    out = tmp_path_factory.mktemp("secprobe")
    (out / "secprobe.c").write_text(source.group(1) + "\n")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out / "secprobe"), str(out / "secprobe.c")], check=True)
    return out / "secprobe"


def probe(refrt: Refrt, secprobe: Path, *args: str, flags: tuple[str, ...] = ()) -> str:
    result = refrt("run", "--rm", "--network", "none", *flags, "-v", f"{secprobe}:/secprobe:ro", "busybox",
                   "/secprobe", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.strip()


def status_field(refrt: Refrt, field: str, *flags: str) -> str:
    result = refrt("run", "--rm", "--network", "none", *flags, "busybox", "grep", f"^{field}:", "/proc/self/status",
                   check=True)
    return result.stdout.split()[1]


def test_seccomp_mode(refrt: Refrt) -> None:
    assert status_field(refrt, "Seccomp") == "2"
    assert status_field(refrt, "Seccomp", "-u", "1000") == "2"  # installed before the user switch (no NNP)
    assert status_field(refrt, "Seccomp", "--userns=private") == "2"  # CAP_SYS_ADMIN of the container's userns
    assert status_field(refrt, "Seccomp", "--security-opt", "seccomp=unconfined") == "0"
    assert status_field(refrt, "Seccomp", "--privileged") == "0"


def test_builder_runs_under_the_filter(refrt: Refrt, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text('FROM busybox\nRUN grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status\n')
    tag = unique("sec-build")
    built = refrt("build", "--no-cache", "-t", tag, str(tmp_path), timeout=120)
    try:
        assert built.returncode == 0, built.stderr
        assert "Seccomp:\t2" in built.stdout + built.stderr and "NoNewPrivs:\t0" in built.stdout + built.stderr
    finally:
        refrt("rmi", "-f", tag)


def test_no_new_privileges_as_docker(refrt: Refrt) -> None:
    assert status_field(refrt, "NoNewPrivs") == "0"
    assert status_field(refrt, "NoNewPrivs", "--security-opt", "no-new-privileges") == "1"
    assert status_field(refrt, "NoNewPrivs", "--security-opt", "no-new-privileges:true") == "1"
    assert status_field(refrt, "NoNewPrivs", "--security-opt", "no-new-privileges=false") == "0"
    # with no_new_privs the filter goes in last, still before execve
    assert status_field(refrt, "Seccomp", "-u", "1000", "--security-opt", "no-new-privileges") == "2"


def test_refused_calls(refrt: Refrt, secprobe: Path) -> None:
    busybox = refrt("run", "--rm", "--network", "none", "busybox", "unshare", "-U", "true")
    assert busybox.returncode != 0 and "Operation not permitted" in busybox.stderr
    for call in REFUSED:
        assert probe(refrt, secprobe, call) == f"{call}: Operation not permitted"
    assert probe(refrt, secprobe, "keyctl-read", "session", "anything") == "keyctl-read: Operation not permitted"
    assert probe(refrt, secprobe, "clone3") == "clone3: Function not implemented"
    # the filter, not the kernel, refused them
    unconfined = ("--security-opt", "seccomp=unconfined")
    assert probe(refrt, secprobe, "unshare-user", flags=unconfined) == "unshare-user: allowed"
    assert probe(refrt, secprobe, "add_key", flags=unconfined) == "add_key: allowed"


def test_capability_conditional_rules(refrt: Refrt, secprobe: Path) -> None:
    assert probe(refrt, secprobe, "unshare-user", flags=("--cap-add", "SYS_ADMIN")) == "unshare-user: allowed"
    mounted = refrt("run", "--rm", "--network", "none", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
                    "mkdir -p /m && mount -t tmpfs none /m && echo mounted")
    assert mounted.stdout.strip() == "mounted", mounted.stderr


@pytest.fixture
def host_keys(secprobe: Path) -> Iterator[str]:
    """A secret in this process's session keyring and in root's user keyring (unlinked afterwards).

    The test process first gets a session keyring of its own, which refrt (a child) then inherits, as a shell's
    login session keyring would be."""
    kernel.join_new_session_keyring()
    name = f"refrt-test-{secrets.token_hex(4)}"
    for ring in ("session", "user"):
        subprocess.run([str(secprobe), "key-add", ring, name, f"secret-{ring}"], check=True, capture_output=True)
        seen = subprocess.run([str(secprobe), "keyctl-read", ring, name], capture_output=True, text=True)
        assert seen.stdout.strip() == f"keyctl-read: read secret-{ring}"
    yield name
    for ring in ("session", "user"):
        subprocess.run([str(secprobe), "key-unlink", ring, name], capture_output=True)


def test_host_keys_unreadable(refrt: Refrt, secprobe: Path, host_keys: str) -> None:
    for ring in ("session", "user"):
        assert "secret" not in probe(refrt, secprobe, "keyctl-read", ring, host_keys)
    # without the filter keyctl works, and still the caller's session keyring is not the container's
    unconfined = ("--security-opt", "seccomp=unconfined")
    got = probe(refrt, secprobe, "keyctl-read", "session", host_keys, flags=unconfined)
    assert got == "keyctl-read: Required key not available"


def test_exec_gets_the_filter_and_a_new_keyring(refrt: Refrt, secprobe: Path, host_keys: str) -> None:
    name = unique("sec")
    refrt("run", "-d", "--name", name, "--network", "none", "-v", f"{secprobe}:/secprobe:ro",
          "--security-opt", "no-new-privileges", "busybox", "sleep", "60", check=True)
    loose = unique("loose")
    refrt("run", "-d", "--name", loose, "--network", "none", "-v", f"{secprobe}:/secprobe:ro",
          "--security-opt", "seccomp=unconfined", "busybox", "sleep", "60", check=True)
    try:
        status = refrt("exec", name, "grep", "-E", "^(Seccomp|NoNewPrivs):", "/proc/self/status", check=True)
        assert status.stdout.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]
        assert refrt("exec", name, "/secprobe", "add_key").stdout.strip() == "add_key: Operation not permitted"
        got = refrt("exec", loose, "/secprobe", "keyctl-read", "session", host_keys).stdout.strip()
        assert got == "keyctl-read: Required key not available"
    finally:
        refrt("rm", "-f", name, loose, check=True)


def test_custom_profile_inspect_and_info(refrt: Refrt, tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    denied = refrt("run", "--rm", "--network", "none", "--security-opt", f"seccomp={path}", "busybox",
                   "mkdir", "/x")
    assert denied.returncode == 1 and "Permission denied" in denied.stderr
    name = unique("opts")
    refrt("create", "--name", name, "--security-opt", "seccomp=unconfined", "--security-opt", "no-new-privileges",
          "busybox", "true", check=True)
    try:
        assert refrt.inspect(name)["HostConfig"]["SecurityOpt"] == ["seccomp=unconfined", "no-new-privileges"]
    finally:
        refrt("rm", name, check=True)
    info = json.loads(refrt("info", "--format", "{{json .}}", check=True).stdout)
    assert "name=seccomp,profile=default" in info["SecurityOptions"]


@pytest.mark.parametrize("option", ["bogus", "seccomp=/no/such/profile.json", "no-new-privileges=maybe",
                                    "seccomp=BADJSON"])
def test_bad_security_opt_exits_125_and_creates_nothing(refrt: Refrt, tmp_path: Path, option: str) -> None:
    if option == "seccomp=BADJSON":
        (tmp_path / "bad.json").write_text('{"defaultAction": "SCMP_ACT_MAYBE"}')
        option = f"seccomp={tmp_path / 'bad.json'}"
    before = set(os.listdir(refrt.root / "containers")) if (refrt.root / "containers").exists() else set()
    result = refrt("run", "--rm", "--security-opt", option, "busybox", "true")
    assert result.returncode == 125 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    after = set(os.listdir(refrt.root / "containers")) if (refrt.root / "containers").exists() else set()
    assert after == before


ABI_PROBE = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static long i386_call(long nr, long a) {  /* int $0x80 from 64-bit code: the i386 ABI, AUDIT_ARCH_I386 */
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a) : "memory");
    return ret;
}
static long x32_call(long nr, long a) {  /* X32_SYSCALL_BIT: the x32 ABI of AUDIT_ARCH_X86_64 */
    long r = syscall(0x40000000L | nr, a);
    return r < 0 ? -errno : r;
}
static void show(const char *name, long ret) { printf("%s %s\n", name, ret < 0 ? strerror((int)-ret) : "ok"); }
int main(void) {
    show("i386-getpid", i386_call(20, 0));
    show("i386-unshare", i386_call(310, 0x10000000));
    show("x32-getpid", x32_call(39, 0));
    show("x32-unshare", x32_call(272, 0x10000000));
    return 0;
}
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64's compat ABIs")
def test_i386_and_x32_calls_are_filtered_by_their_own_tables(refrt: Refrt, tmp_path: Path) -> None:
    (tmp_path / "abi.c").write_text(ABI_PROBE)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "abi"), str(tmp_path / "abi.c")], check=True)
    got = dict(line.split(" ", 1) for line in refrt(
        "run", "--rm", "--network", "none", "-v", f"{tmp_path / 'abi'}:/abi:ro", "busybox", "/abi", check=True
    ).stdout.splitlines())
    assert got["i386-getpid"] == "ok" and got["i386-unshare"] == "Operation not permitted"
    # getpid passes the filter (the kernel may lack x32: ENOSYS); unshare is the filter's EPERM either way
    assert got["x32-getpid"] in ("ok", "Function not implemented")
    assert got["x32-unshare"] == "Operation not permitted"


# ------------------------------------------------------------------------------- the compiler, on the kernel
def _errno_of_getpgid(program: bytes, values: list[int]) -> list[int]:
    """In a forked child under ``program``, getpgid(v) for each value: the errno (0 on success)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            syscalls.set_no_new_privs()
            kernel.install_filter(program)
            out = []
            for v in values:
                rc = syscalls._libc.syscall(ctypes.c_long(121), ctypes.c_ulong(v))  # getpgid, x86_64
                out.append(ctypes.get_errno() if rc < 0 else 0)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    result: list[int] = json.loads(data)
    return result


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is built for x86_64 (docs/security.md)")
@pytest.mark.parametrize(("op", "value", "value_two", "holds"), [
    ("SCMP_CMP_EQ", 5, 0, lambda v: v == 5),
    ("SCMP_CMP_NE", 5, 0, lambda v: v != 5),
    ("SCMP_CMP_GT", (1 << 32) + 1, 0, lambda v: v > (1 << 32) + 1),
    ("SCMP_CMP_GE", (1 << 32) + 1, 0, lambda v: v >= (1 << 32) + 1),
    ("SCMP_CMP_LT", (1 << 32) + 1, 0, lambda v: v < (1 << 32) + 1),
    ("SCMP_CMP_LE", 7, 0, lambda v: v <= 7),
    ("SCMP_CMP_MASKED_EQ", 0xFF000000F0, 0x10000000F0, lambda v: v & 0xFF000000F0 == 0x10000000F0),
])
def test_argument_comparisons(op: str, value: int, value_two: int, holds: object) -> None:
    profile = load_json(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77,
         "args": [{"index": 0, "op": op, "value": value, "valueTwo": value_two}]}]}))
    values = [0, 5, 6, 7, 8, 0xF0, (1 << 32), (1 << 32) + 1, (1 << 32) + 2, 0x10000000F0, 0x10000001F0,
              (1 << 40) + 5, 0xFFFFFFFF]
    got = _errno_of_getpgid(compile_profile(profile, []), values)
    assert callable(holds)
    for v, errno in zip(values, got, strict=True):
        assert (errno == 77) == holds(v), (op, hex(v), errno)


def test_default_filter_size_and_caching() -> None:
    program = seccomp.filter_for(seccomp.SecurityOptions(), False, list(capabilities.DEFAULT))
    assert program is not None and len(program) % 8 == 0 and len(program) // 8 < 1000
    assert seccomp.filter_for(seccomp.SecurityOptions(), False, list(capabilities.DEFAULT)) is program
    assert seccomp.filter_for(seccomp.SecurityOptions(seccomp="unconfined"), False, []) is None
    assert seccomp.filter_for(seccomp.SecurityOptions(), True, []) is None
    with_admin = compile_profile(DEFAULT, [*capabilities.DEFAULT, "SYS_ADMIN"])
    assert with_admin != program  # capability-conditional rules change the program
