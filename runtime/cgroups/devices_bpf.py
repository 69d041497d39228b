"""Device access rules on cgroup v2: a small eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE) per container group.

cgroup v2 has no devices.allow file; runc and crun attach a program that the kernel runs on every open/mknod of a
device node and that answers allow (1) or deny (0). This module assembles that program from docker's rules
("c 1:3 rwm", "c *:* m"...) and attaches it to the group's directory, through the bpf(2) syscall. The program's
only input is ``struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}`` where access_type is
``(access << 16) | type``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from pathlib import Path

from runtime import syscalls
from runtime.cgroups.base import CgroupError

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2

_DEV_BLOCK, _DEV_CHAR = 1, 2
_ACC_MKNOD, _ACC_READ, _ACC_WRITE = 1, 2, 4

# eBPF opcodes used (see linux/bpf.h / bpf_common.h)
_LDX_MEM_W = 0x61
_MOV64_X = 0xBF
_MOV64_K = 0xB7
_AND64_K = 0x57
_RSH64_K = 0x77
_JNE_K = 0x55
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def parse_rule(rule: str) -> tuple[int, int, int, int]:
    """``"c 1:3 rwm"`` -> (type, major, minor, access); -1 stands for ``*`` (and type 0 for ``a``)."""
    kind, numbers, access = rule.split()
    major_text, _, minor_text = numbers.partition(":")
    dev_type = {"a": 0, "b": _DEV_BLOCK, "c": _DEV_CHAR}[kind]
    bits = sum({"m": _ACC_MKNOD, "r": _ACC_READ, "w": _ACC_WRITE}[ch] for ch in access)
    major = -1 if major_text == "*" else int(major_text)
    minor = -1 if minor_text == "*" else int(minor_text)
    return dev_type, major, minor, bits


def assemble(rules: tuple[str, ...] | list[str]) -> bytes:
    """Allow-list program: the first matching rule allows, nothing matching denies."""
    head = [
        _insn(_LDX_MEM_W, dst=2, src=1, off=0),  # r2 = access_type
        _insn(_MOV64_X, dst=3, src=2),  # r3 = r2
        _insn(_AND64_K, dst=3, imm=0xFFFF),  # r3 = type
        _insn(_RSH64_K, dst=2, imm=16),  # r2 = access bits
        _insn(_LDX_MEM_W, dst=4, src=1, off=4),  # r4 = major
        _insn(_LDX_MEM_W, dst=5, src=1, off=8),  # r5 = minor
    ]
    body: list[bytes] = []
    for rule in rules:
        dev_type, major, minor, access = parse_rule(rule)
        checks: list[tuple[int, int]] = []  # (register, value) that must be equal
        if dev_type:
            checks.append((3, dev_type))
        if major >= 0:
            checks.append((4, major))
        if minor >= 0:
            checks.append((5, minor))
        # block: checks..., r1 = r2 & ~access; if r1 != 0 skip; r0 = 1; exit
        block_len = len(checks) + 5
        block: list[bytes] = []
        for i, (reg, value) in enumerate(checks):
            block.append(_insn(_JNE_K, dst=reg, off=block_len - i - 1, imm=value))
        block += [
            _insn(_MOV64_X, dst=1, src=2),
            _insn(_AND64_K, dst=1, imm=~access & 0x7FFFFFFF),
            _insn(_JNE_K, dst=1, off=2, imm=0),
            _insn(_MOV64_K, dst=0, imm=1),
        ]
        block.append(_insn(_EXIT))
        body += block
    tail = [_insn(_MOV64_K, dst=0, imm=0), _insn(_EXIT)]
    return b"".join(head + body + tail)


def _bpf(cmd: int, attr: bytes) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise CgroupError(f"bpf: unknown syscall number on {platform.machine()}")
    buf = ctypes.create_string_buffer(attr, len(attr))
    libc = syscalls._libc
    result = int(libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf, ctypes.c_uint(len(attr))))
    if result < 0:
        err = ctypes.get_errno()
        raise CgroupError(f"bpf({cmd}): {os.strerror(err)}")
    return result


def load_program(rules: tuple[str, ...] | list[str]) -> int:
    """Load the program; returns its fd."""
    code = assemble(rules)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
    # kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type
    attr = struct.pack(
        "<IIQQIIQII16sII",
        _BPF_PROG_TYPE_CGROUP_DEVICE,
        len(code) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        b"refrt_devices",
        0,
        _BPF_CGROUP_DEVICE,
    )
    try:
        return _bpf(_BPF_PROG_LOAD, attr.ljust(128, b"\0"))
    except CgroupError as exc:
        raise CgroupError(f"{exc}: {log.value.decode(errors='replace').strip()}") from None


def attach(group: Path, rules: tuple[str, ...] | list[str]) -> None:
    """Attach a device filter for ``rules`` to the v2 group ``group`` (it lives as long as the group)."""
    prog = load_program(rules)
    try:
        cgroup_fd = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags
            _bpf(_BPF_PROG_ATTACH, struct.pack("<IIII", cgroup_fd, prog, _BPF_CGROUP_DEVICE,
                                               _BPF_F_ALLOW_MULTI).ljust(128, b"\0"))
        finally:
            os.close(cgroup_fd)
    finally:
        os.close(prog)
