"""Compile a resolved seccomp profile to a classic BPF program, for x86_64 with its i386 and x32 ABIs.

Layout of the program (what libseccomp generates for docker, in a form of our own):

1. ``arch`` is checked first: AUDIT_ARCH_X86_64 or AUDIT_ARCH_I386 select their section; any other
   architecture gets the bad-architecture action (kill, libseccomp's default). On x86_64, a number with
   ``X32_SYSCALL_BIT`` set is an x32 call and goes to the x32 section (or the bad-architecture action when
   the profile does not list SCMP_ARCH_X32), so x32 numbers can never alias x86_64 ones.
2. Each section is a binary search over the ABI's number space cut into intervals of equal treatment (most
   allowed calls are contiguous runs), about 8 comparisons per call instead of a linear scan of 350.
3. A call with argument rules runs its alternatives in order; conditions of one rule all hold (AND), several
   rules for one call are alternatives (OR); none matching means the default action. Arguments are 64-bit on
   x86_64/x32 (both halves compared) and 32-bit on i386 (the low half only).
4. Numbers above the highest one this table knows (newer kernels) answer ENOSYS, as runc does, so programs
   fall back to older calls instead of failing with EPERM; not when the default action allows.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from runtime.container.seccomp import bpf, tables
from runtime.container.seccomp.profile import ENOSYS, EPERM, Arg, Profile, Rule, resolve
from runtime.errors import RefrtError

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
X32_SYSCALL_BIT = 0x40000000
RET = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000, "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
}  # fmt: skip
BAD_ARCH = RET["SCMP_ACT_KILL_THREAD"]


class UnsupportedArchitecture(RefrtError):
    """Seccomp filters are compiled for x86_64 only (see docs/security.md for arm64)."""


@dataclass(frozen=True)
class Abi:
    name: str  # SCMP_ARCH_*
    numbers: dict[str, int]
    base: int  # added to every number (X32_SYSCALL_BIT for x32)
    wide: bool  # 64-bit arguments


ABIS = (
    Abi("SCMP_ARCH_X86_64", tables.X86_64, 0, True),
    Abi("SCMP_ARCH_X86", tables.I386, 0, False),
    Abi("SCMP_ARCH_X32", tables.X32, X32_SYSCALL_BIT, True),
)


def action_value(action: str, errno: int | None, default_errno: int | None) -> int:
    value = RET[action]
    if action == "SCMP_ACT_ERRNO":
        value |= (errno if errno is not None else default_errno if default_errno is not None else EPERM) & 0xFFFF
    return value


def compile_profile(profile: Profile, capabilities: list[str]) -> bytes:
    """The packed ``struct sock_filter`` array for this host's architecture and the container's capabilities."""
    if platform.machine() != "x86_64":
        raise UnsupportedArchitecture(
            f"seccomp filters are built for x86_64 only, not {platform.machine()}; "
            "run with --security-opt seccomp=unconfined"
        )
    rules = resolve(profile, capabilities)
    arches = set(profile.architectures or ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"))
    default = action_value(profile.default_action, None, profile.default_errno)
    stub = profile.default_action not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
    x86_64, i386, x32 = ({"SCMP_ARCH_X86_64", "SCMP_ARCH_AMD64"} & arches, "SCMP_ARCH_X86" in arches,
                         "SCMP_ARCH_X32" in arches)
    section = {abi.name: _section(abi, rules, profile.default_errno, default, stub) for abi in ABIS}
    native = section["SCMP_ARCH_X86_64"] if x86_64 else bpf.ret(BAD_ARCH)
    on_x86_64 = bpf.branch(bpf.JGE_K, X32_SYSCALL_BIT, section["SCMP_ARCH_X32"] if x32 else bpf.ret(BAD_ARCH), native)
    on_i386 = section["SCMP_ARCH_X86"] if i386 else bpf.ret(BAD_ARCH)
    program = [
        bpf.load(bpf.OFFSET_ARCH),
        *bpf.branch(bpf.JEQ_K, AUDIT_ARCH_X86_64, [bpf.load(bpf.OFFSET_NR), *on_x86_64],
                    bpf.branch(bpf.JEQ_K, AUDIT_ARCH_I386, [bpf.load(bpf.OFFSET_NR), *on_i386],
                               bpf.ret(BAD_ARCH))),
    ]
    return bpf.pack(program)


# Treatment of one system call number: ("ret", value) or ("args", ((conditions, value), ...)).
Treatment = tuple[str, object]


def _section(abi: Abi, rules: list[Rule], default_errno: int | None, default: int, stub: bool) -> bpf.Block:
    """Binary search over this ABI's numbers; the accumulator holds ``nr`` on entry."""
    per_call: dict[int, list[tuple[tuple[Arg, ...], int]]] = {}
    for rule in rules:
        value = action_value(rule.action, rule.errno, default_errno)
        for name in rule.names:
            number = abi.numbers.get(name)
            if number is None:
                continue  # not a call of this ABI (libseccomp skips it the same way)
            for conditions in _alternatives(rule.args):
                per_call.setdefault(number, []).append((conditions, value))
    highest = max(abi.numbers.values())
    treatments: list[Treatment] = []
    for number in range(highest + 1):
        alternatives = per_call.get(number)
        treatments.append(_treatment(alternatives, default))
    # intervals of equal treatment: (first number, treatment)
    intervals: list[tuple[int, Treatment]] = []
    for number, treatment in enumerate(treatments):
        if not intervals or intervals[-1][1] != treatment:
            intervals.append((number, treatment))
    intervals.append((highest + 1, ("ret", action_value("SCMP_ACT_ERRNO", ENOSYS, None) if stub else default)))
    return _search([(abi.base + first, t) for first, t in intervals], abi.wide, default)


def _alternatives(args: tuple[Arg, ...]) -> list[tuple[Arg, ...]]:
    """Conditions on distinct arguments are one rule (AND); several on the same argument are alternatives
    (OR), as runc splits them - a call cannot have two values in one argument at once."""
    indexes = [a.index for a in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [(a,) for a in args]


def _treatment(alternatives: list[tuple[tuple[Arg, ...], int]] | None, default: int) -> Treatment:
    if not alternatives:
        return ("ret", default)
    unconditional = [value for conditions, value in alternatives if not conditions]
    if unconditional:
        return ("ret", unconditional[0])  # a rule without conditions decides alone, whatever else is said
    return ("args", tuple(alternatives))


def _search(intervals: list[tuple[int, Treatment]], wide: bool, default: int) -> bpf.Block:
    if len(intervals) == 1:
        return _emit(intervals[0][1], wide, default)
    middle = len(intervals) // 2
    return bpf.branch(bpf.JGE_K, intervals[middle][0], _search(intervals[middle:], wide, default),
                      _search(intervals[:middle], wide, default))


def _emit(treatment: Treatment, wide: bool, default: int) -> bpf.Block:
    kind, payload = treatment
    if kind == "ret":
        assert isinstance(payload, int)
        return bpf.ret(payload)
    code: bpf.Block = bpf.ret(default)
    assert isinstance(payload, tuple)
    for conditions, value in reversed(payload):
        code = _alternative(conditions, value, wide, code)
    return code


def _alternative(conditions: tuple[Arg, ...], value: int, wide: bool, otherwise: bpf.Block) -> bpf.Block:
    """All ``conditions`` hold -> ``ret value``; any fails -> ``otherwise``, laid right after."""
    code: bpf.Block = bpf.ret(value)
    for arg in reversed(conditions):
        code = _test(arg, wide, code)
    return [*code, *otherwise]


def _test(arg: Arg, wide: bool, passed: bpf.Block) -> bpf.Block:
    """One condition laid before ``passed`` (which ends in a ``ret``): when it holds, control reaches
    ``passed``; when not, it jumps just past ``passed``, where the next alternative starts. From the test at
    index i of n, "past passed" is ``n - i - 1 + len(passed)`` ahead; "into passed" is ``n - i - 1``."""
    low = bpf.load(bpf.arg_offset(arg.index, False))
    high = bpf.load(bpf.arg_offset(arg.index, True))
    p = len(passed)
    v_lo, v_hi = arg.value & 0xFFFFFFFF, arg.value >> 32
    if arg.op == "SCMP_CMP_MASKED_EQ":  # (arg & value) == value_two, per half
        d_lo, d_hi = arg.value_two & 0xFFFFFFFF, arg.value_two >> 32
        tail = [low, bpf.Insn(bpf.ALU_AND_K, k=v_lo), bpf.Insn(bpf.JEQ_K, 0, p, d_lo)]
        head = [high, bpf.Insn(bpf.ALU_AND_K, k=v_hi), bpf.Insn(bpf.JEQ_K, 0, len(tail) + p, d_hi)]
        return [*(head if wide else []), *tail, *passed]
    if arg.op == "SCMP_CMP_EQ":  # both halves equal
        tail = [low, bpf.Insn(bpf.JEQ_K, 0, p, v_lo)]
        if not wide and v_hi:
            return [bpf.Insn(bpf.JA, k=p), *passed]  # a 32-bit argument never equals a wider value
        return [*([high, bpf.Insn(bpf.JEQ_K, 0, len(tail) + p, v_hi)] if wide else []), *tail, *passed]
    if arg.op == "SCMP_CMP_NE":  # either half differs
        tail = [low, bpf.Insn(bpf.JEQ_K, p, 0, v_lo)]
        if not wide and v_hi:
            return passed
        return [*([high, bpf.Insn(bpf.JEQ_K, 0, len(tail), v_hi)] if wide else []), *tail, *passed]
    # ordered comparisons: the high half decides unless equal, then the low half.
    # The low test is A > v (GT, and LE as its negation) or A >= v (GE, and LT as its negation).
    greater = arg.op in ("SCMP_CMP_GT", "SCMP_CMP_GE")
    low_test = bpf.JGT_K if arg.op in ("SCMP_CMP_GT", "SCMP_CMP_LE") else bpf.JGE_K
    tail = [low, bpf.Insn(low_test, 0, p, v_lo) if greater else bpf.Insn(low_test, p, 0, v_lo)]
    if not wide:
        return [*tail, *passed]
    n = len(tail)
    if greater:  # high > v_hi: pass; high < v_hi: fail
        head = [high, bpf.Insn(bpf.JGT_K, 1 + n, 0, v_hi), bpf.Insn(bpf.JEQ_K, 0, n + p, v_hi)]
    else:  # high > v_hi: fail; high < v_hi: pass
        head = [high, bpf.Insn(bpf.JGT_K, 1 + n + p, 0, v_hi), bpf.Insn(bpf.JEQ_K, 0, n, v_hi)]
    return [*head, *tail, *passed]
