"""A small classic-BPF assembler for seccomp filters: instructions, packing, and blocks that always return.

A seccomp program runs on ``struct seccomp_data`` (``nr`` at 0, ``arch`` at 4, the instruction pointer at 8,
six 64-bit arguments from 16, little-endian on x86_64/arm64). Conditional jumps reach at most 255
instructions ahead, so code is built from *blocks*: lists of instructions in which every path ends in a
``ret``. Two blocks can then be laid one after the other without any fall-through, and :func:`branch` picks
between two blocks with a short conditional jump, adding an unconditional ``ja`` (32-bit offset) when the
first block is too long for one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# instruction classes and modes (linux/bpf_common.h)
LD_W_ABS = 0x20  # A = *(u32 *)(data + k)
ALU_AND_K = 0x54  # A &= k
JA = 0x05  # pc += k
JEQ_K, JGT_K, JGE_K, JSET_K = 0x15, 0x25, 0x35, 0x45  # pc += (A op k) ? jt : jf
RET_K = 0x06

OFFSET_NR, OFFSET_ARCH = 0, 4
MAX_JUMP = 255


def arg_offset(index: int, high: bool) -> int:
    """Offset of an argument's low or high 32-bit word (little-endian)."""
    return 16 + 8 * index + (4 if high else 0)


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0

    def pack(self) -> bytes:
        if not (0 <= self.jt <= MAX_JUMP and 0 <= self.jf <= MAX_JUMP):
            raise ValueError(f"BPF jump out of range: {self}")
        return struct.pack("<HBBI", self.code, self.jt, self.jf, self.k & 0xFFFFFFFF)


Block = list[Insn]


def load(offset: int) -> Insn:
    return Insn(LD_W_ABS, k=offset)


def ret(value: int) -> Block:
    return [Insn(RET_K, k=value)]


def branch(test: int, k: int, taken: Block, not_taken: Block) -> Block:
    """``if (A test k) taken else not_taken``; both blocks must end every path in a ``ret``."""
    if len(taken) <= MAX_JUMP:
        return [Insn(test, 0, len(taken), k), *taken, *not_taken]
    return [Insn(test, 1, 0, k), Insn(JA, k=len(taken)), *taken, *not_taken]


def pack(program: Block) -> bytes:
    if len(program) > 4096:  # BPF_MAXINSNS
        raise ValueError(f"seccomp filter too long: {len(program)} instructions (at most 4096)")
    return b"".join(insn.pack() for insn in program)
