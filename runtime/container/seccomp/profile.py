"""Seccomp profiles: docker's default rules, written anew as a table, and a loader for docker's JSON format.

Where the default rules come from: moby's ``profiles/seccomp/default.json`` (read for its semantics, not copied;
the table below groups the same system calls by what they do), with one later upstream change applied:
``io_uring_setup``/``io_uring_enter``/``io_uring_register`` are refused (moby pull request 46762, docker >= 25,
the same as containerd 2.0 and podman). Its semantics, kept here:

- the default action is ``SCMP_ACT_ERRNO`` with EPERM: whatever is not allowed fails with "Operation not
  permitted" rather than killing the process;
- a long list of ordinary calls is allowed outright;
- argument filters: ``socket`` for every family but AF_VSOCK (40); ``personality`` only with the values that
  query or select the plain Linux personalities (0, 8, 0x20000, 0x20008, 0xffffffff); ``clone`` only when
  none of the namespace flags (mask 0x7E020000) is set, unless the container has CAP_SYS_ADMIN;
- capability-conditional rules: a call whose only legitimate use needs a capability is allowed when the
  container holds it (``mount``, ``unshare``, ``setns``... with CAP_SYS_ADMIN, ``ptrace`` with CAP_SYS_PTRACE
  (and from kernel 4.8 on for everyone, when ptrace can no longer bypass seccomp), ``reboot`` with
  CAP_SYS_BOOT, ``bpf`` with CAP_BPF...);
- ``clone3`` answers ENOSYS without CAP_SYS_ADMIN, since its flags live in memory a filter cannot read: libc
  then falls back to ``clone``, whose flags the filter can check;
- ``includes.arches``/``excludes.arches`` name Go architectures and are compared with the host's native one
  (``amd64`` here), as dockerd does; the rule then applies to every ABI the filter knows (x86_64, i386, x32).

Rules a container gets are :func:`resolve`'d once from its capability set and the host, then compiled by
:mod:`runtime.container.seccomp.compile`.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import UsageError

ACTIONS = ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
           "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG")
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ")
EPERM, ENOSYS = 1, 38
AF_VSOCK = 40
#: the clone flags that create namespaces: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
NAMESPACE_FLAGS = 0x7E020000
#: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (query the current one)
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le",
           "riscv64": "riscv64", "i686": "386"}


@dataclass(frozen=True)
class Arg:
    """One argument comparison; for ``SCMP_CMP_MASKED_EQ`` ``value`` is the mask and ``value_two`` the datum."""

    index: int
    op: str
    value: int
    value_two: int = 0


@dataclass(frozen=True)
class When:
    """``includes``/``excludes``: capabilities (``CAP_*``), Go architecture names, a minimum kernel."""

    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: str = ""

    def empty(self) -> bool:
        return not (self.caps or self.arches or self.min_kernel)


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str = "SCMP_ACT_ALLOW"
    errno: int | None = None
    args: tuple[Arg, ...] = ()
    includes: When = field(default_factory=When)
    excludes: When = field(default_factory=When)


@dataclass(frozen=True)
class Profile:
    default_action: str
    default_errno: int | None
    architectures: tuple[str, ...]  # SCMP_ARCH_*; the native one (with its docker sub-architectures) if empty
    rules: tuple[Rule, ...]


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# ------------------------------------------------------------------------------------ docker's default rules
_ALLOWED = {
    "files and directories": """
        access faccessat faccessat2 open openat openat2 creat close close_range read readv pread64 preadv
        preadv2 write writev pwrite64 pwritev pwritev2 lseek _llseek stat stat64 lstat lstat64 fstat fstat64
        fstatat64 newfstatat statx statfs statfs64 fstatfs fstatfs64 truncate truncate64 ftruncate
        ftruncate64 fallocate fadvise64 fadvise64_64 readahead fsync fdatasync sync syncfs sync_file_range
        mkdir mkdirat rmdir mknod mknodat link linkat symlink symlinkat unlink unlinkat rename renameat
        renameat2 readlink readlinkat chdir fchdir getcwd getdents getdents64 chmod fchmod fchmodat chown
        chown32 fchown fchown32 fchownat lchown lchown32 umask utime utimes utimensat utimensat_time64
        futimesat flock fcntl fcntl64 dup dup2 dup3 copy_file_range sendfile sendfile64 splice tee vmsplice
        name_to_handle_at inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
        ioctl
    """,
    "extended attributes": """
        getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr listxattr llistxattr flistxattr
        removexattr lremovexattr fremovexattr
    """,
    "waiting and polling": """
        select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create epoll_create1
        epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2 eventfd eventfd2
        timerfd_create timerfd_settime timerfd_settime64 timerfd_gettime timerfd_gettime64 signalfd signalfd4
        pipe pipe2 pause
    """,
    "asynchronous I/O (not io_uring)": """
        io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
        ioprio_get ioprio_set
    """,
    "processes and threads": """
        fork vfork execve execveat exit exit_group wait4 waitid waitpid kill tkill tgkill getpid getppid
        gettid getpgid setpgid getpgrp getsid setsid set_tid_address set_robust_list get_robust_list rseq
        futex futex_time64 futex_waitv set_thread_area get_thread_area restart_syscall prctl capget capset
        pidfd_open pidfd_send_signal process_mrelease membarrier seccomp landlock_create_ruleset
        landlock_add_rule landlock_restrict_self
    """,
    "signals": """
        rt_sigaction rt_sigprocmask sigprocmask rt_sigreturn sigreturn rt_sigpending rt_sigsuspend
        rt_sigtimedwait rt_sigtimedwait_time64 rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack
    """,
    "memory": """
        brk mmap mmap2 munmap mremap mprotect madvise mincore msync mlock mlock2 mlockall munlock munlockall
        remap_file_pages memfd_create memfd_secret pkey_alloc pkey_free pkey_mprotect
    """,
    "identities": """
        getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid getresuid32 getresgid
        getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32 setreuid setreuid32 setregid
        setregid32 setresuid setresuid32 setresgid setresgid32 setfsuid setfsuid32 setfsgid setfsgid32
        setgroups setgroups32
    """,
    "limits, scheduling, accounting": """
        getrlimit ugetrlimit setrlimit prlimit64 getrusage getpriority setpriority times sysinfo uname
        getrandom getcpu sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
        sched_getparam sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
        sched_get_priority_min sched_rr_get_interval sched_rr_get_interval_time64
    """,
    "time and timers": """
        time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64 clock_nanosleep
        clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64 alarm getitimer setitimer
        timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
        timer_settime64
    """,
    "System V and POSIX IPC": """
        ipc msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl shmget shmat shmdt
        shmctl mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive mq_timedreceive_time64
        mq_notify mq_getsetattr
    """,
    "sockets (socket itself is filtered by family)": """
        socketcall socketpair bind listen accept accept4 connect getsockname getpeername getsockopt
        setsockopt shutdown send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64
    """,
}
#: (capability, calls allowed with it); docker's "includes: caps" rules
_WITH_CAPABILITY = (
    ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    ("CAP_SYS_ADMIN", """bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
                         mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname
                         sethostname setns syslog umount umount2 unshare"""),
    ("CAP_SYS_BOOT", "reboot"),
    ("CAP_SYS_CHROOT", "chroot"),
    ("CAP_SYS_MODULE", "init_module finit_module delete_module"),
    ("CAP_SYS_PACCT", "acct"),
    ("CAP_SYS_PTRACE", "ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd process_madvise"),
    ("CAP_SYS_RAWIO", "iopl ioperm"),
    ("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
    ("CAP_SYS_TTY_CONFIG", "vhangup"),
    ("CAP_SYS_NICE", "get_mempolicy set_mempolicy set_mempolicy_home_node mbind"),
    ("CAP_SYSLOG", "syslog"),
    ("CAP_BPF", "bpf"),
    ("CAP_PERFMON", "perf_event_open"),
)
#: (Go architectures, calls allowed there); docker's "includes: arches" rules
_ON_ARCH = (
    (("amd64", "x32"), "arch_prctl"),
    (("amd64", "x32", "x86"), "modify_ldt"),
    (("arm", "arm64"), "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls"),
    (("ppc64le",), "sync_file_range2 swapcontext"),
    (("s390", "s390x"), "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
    (("riscv64",), "riscv_flush_icache"),
)
_NO_SYS_ADMIN = When(caps=("CAP_SYS_ADMIN",))


def _default_rules() -> tuple[Rule, ...]:
    rules = [Rule(_names(" ".join(_ALLOWED.values())))]
    rules.append(Rule(_names("ptrace process_vm_readv process_vm_writev"), includes=When(min_kernel="4.8")))
    rules.append(Rule(("socket",), args=(Arg(0, "SCMP_CMP_NE", AF_VSOCK),)))
    rules += [Rule(("personality",), args=(Arg(0, "SCMP_CMP_EQ", value),)) for value in PERSONALITIES]
    rules += [Rule(_names(calls), includes=When(arches=arches)) for arches, calls in _ON_ARCH]
    rules += [Rule(_names(calls), includes=When(caps=(cap,))) for cap, calls in _WITH_CAPABILITY]
    # clone's flags are its first argument except on s390, where the first two are swapped
    rules.append(Rule(("clone",), args=(Arg(0, "SCMP_CMP_MASKED_EQ", NAMESPACE_FLAGS, 0),),
                      excludes=When(caps=("CAP_SYS_ADMIN",), arches=("s390", "s390x"))))
    rules.append(Rule(("clone",), args=(Arg(1, "SCMP_CMP_MASKED_EQ", NAMESPACE_FLAGS, 0),),
                      includes=When(arches=("s390", "s390x")), excludes=_NO_SYS_ADMIN))
    rules.append(Rule(("clone3",), action="SCMP_ACT_ERRNO", errno=ENOSYS, excludes=_NO_SYS_ADMIN))
    return tuple(rules)


DEFAULT = Profile(default_action="SCMP_ACT_ERRNO", default_errno=EPERM, architectures=(), rules=_default_rules())


# ----------------------------------------------------------------------------------- docker's JSON format
class BadProfile(UsageError):
    """A ``--security-opt seccomp=FILE`` that is not a valid docker seccomp profile."""


def load_json(text: str, origin: str = "profile") -> Profile:
    """Parse docker's seccomp JSON (``defaultAction``, ``architectures``/``archMap``, ``syscalls`` with
    ``names``/``name``, ``action``, ``errnoRet``, ``args``, ``includes``, ``excludes``)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadProfile(f"decoding seccomp profile failed: {origin}: {exc}") from None
    if not isinstance(data, dict):
        raise BadProfile(f"decoding seccomp profile failed: {origin}: not a JSON object")
    for unsupported in ("listenerPath", "listenerMetadata"):
        if data.get(unsupported):
            raise BadProfile(f"seccomp profile {origin}: {unsupported} (user notification) is not supported")
    default_action = _action(data.get("defaultAction", ""), origin)
    arches = list(data.get("architectures") or [])
    native = native_scmp_arch()
    for entry in data.get("archMap") or []:
        if entry.get("architecture") == native:
            arches = [native, *(entry.get("subArchitectures") or [])]
    rules = tuple(_rule(item, origin) for item in data.get("syscalls") or [])
    return Profile(default_action=default_action, default_errno=_int(data.get("defaultErrnoRet"), origin),
                   architectures=tuple(arches), rules=rules)


def _action(value: Any, origin: str) -> str:
    if value == "SCMP_ACT_NOTIFY":
        raise BadProfile(f"seccomp profile {origin}: SCMP_ACT_NOTIFY is not supported")
    if value not in ACTIONS:
        raise BadProfile(f"seccomp profile {origin}: unknown action {value!r}")
    return str(value)


def _int(value: Any, origin: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadProfile(f"seccomp profile {origin}: expected a non-negative integer, got {value!r}")
    return value


def _when(data: Any, origin: str) -> When:
    if not data:
        return When()
    if not isinstance(data, dict):
        raise BadProfile(f"seccomp profile {origin}: includes/excludes must be objects")
    return When(caps=tuple(data.get("caps") or ()), arches=tuple(data.get("arches") or ()),
                min_kernel=str(data.get("minKernel") or ""))


def _rule(item: Any, origin: str) -> Rule:
    if not isinstance(item, dict):
        raise BadProfile(f"seccomp profile {origin}: every syscalls entry must be an object")
    names = list(item.get("names") or [])
    if item.get("name"):
        names.append(item["name"])
    if not names:
        raise BadProfile(f"seccomp profile {origin}: a syscalls entry names no system call")
    args = []
    for arg in item.get("args") or []:
        op = arg.get("op")
        if op not in OPERATORS:
            raise BadProfile(f"seccomp profile {origin}: unknown operator {op!r}")
        index = _int(arg.get("index"), origin)
        if index is None or index > 5:
            raise BadProfile(f"seccomp profile {origin}: argument index must be 0-5, got {arg.get('index')!r}")
        value, value_two = _int(arg.get("value", 0), origin) or 0, _int(arg.get("valueTwo", 0), origin) or 0
        args.append(Arg(index, op, value, value_two))
    return Rule(names=tuple(names), action=_action(item.get("action"), origin),
                errno=_int(item.get("errnoRet"), origin), args=tuple(args),
                includes=_when(item.get("includes"), origin), excludes=_when(item.get("excludes"), origin))


# ------------------------------------------------------------------------------------------ resolution
def native_scmp_arch() -> str:
    return {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(platform.machine(), "")


def _kernel_at_least(wanted: str) -> bool:
    def version(text: str) -> tuple[int, ...]:
        parts = []
        for piece in text.split("-")[0].split(".")[:3]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            parts.append(int(digits or 0))
        return tuple(parts)

    return version(os.uname().release) >= version(wanted)


def _holds(when: When, caps: set[str], go_arch: str) -> bool:
    """Whether every part of an ``includes`` holds (docker: all given conditions must hold)."""
    if when.caps and not all(c in caps for c in when.caps):
        return False
    if when.arches and go_arch not in when.arches:
        return False
    return not (when.min_kernel and not _kernel_at_least(when.min_kernel))


def _excluded(when: When, caps: set[str], go_arch: str) -> bool:
    """Whether an ``excludes`` applies: any listed capability held, or the native architecture listed."""
    return any(c in caps for c in when.caps) or go_arch in when.arches


def resolve(profile: Profile, capabilities: list[str]) -> list[Rule]:
    """The rules that apply to a container holding ``capabilities`` (names without ``CAP_``) on this host."""
    caps = {f"CAP_{c}" for c in capabilities}
    go_arch = GO_ARCH.get(platform.machine(), platform.machine())
    return [r for r in profile.rules if _holds(r.includes, caps, go_arch) and not _excluded(r.excludes, caps, go_arch)]
