"""runtime.safetar: the standard library's extraction filters, and the fallback that applies the same rules on a
Python without them (the guests' 3.11.2). Each hostile or ordinary archive is extracted through the native path
and the forced fallback, and both must refuse it with the same error or produce the same tree; where the host
also has an old interpreter (Debian's /usr/bin/python3.11 is 3.11.2), the fallback runs there for real."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime import safetar

REPO = Path(__file__).resolve().parents[2]

Member = tuple[str, str, dict[str, Any]]  # name, kind, attributes


def _tar(members: list[Member], outside: Path) -> bytes:
    """The archive; ``@OUTSIDE`` in link names is ``outside``, a directory next to every destination whose files
    the hostile cases try to reach (never a real system file: a hard link the ``tar`` policy lets through gets
    the member's owner and mode applied to its target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, attrs in members:
            info = tarfile.TarInfo(name)
            info.mode = attrs.get("mode", 0o644)
            info.uid = info.gid = attrs.get("uid", 1234)
            info.uname = info.gname = ""
            data = attrs.get("data", b"")
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "lnk": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = attrs.get("link", "").replace("@OUTSIDE", str(outside))
            info.devmajor, info.devminor = attrs.get("dev", (0, 0))
            tar.addfile(info)
    return buf.getvalue()


# The cases: each archive is extracted under both policies (and "tar" plus the build context's extra checks).
CASES: dict[str, list[Member]] = {
    "plain": [
        ("d", "dir", {"mode": 0o755}),
        ("d/f", "file", {"data": b"hello", "mode": 0o640}),
        ("d/x", "file", {"data": b"#!", "mode": 0o755}),
        ("ro", "dir", {"mode": 0o555}),
        ("ro/inside", "file", {"data": b"a"}),
        ("d/rel", "sym", {"link": "f"}),
        ("d/hard", "lnk", {"link": "d/f"}),
    ],
    "modes": [
        ("suid", "file", {"mode": 0o4777}),
        ("private", "file", {"mode": 0o000}),
        ("gw", "dir", {"mode": 0o777}),
    ],
    "absolute-name": [("/etc/abs", "file", {"data": b"x"})],
    "dotdot": [("a/../../escape", "file", {"data": b"x"})],
    "through-symlink": [("l", "sym", {"link": "@OUTSIDE"}), ("l/escape", "file", {"data": b"x"})],
    "symlink-dotdot": [("up", "sym", {"link": "../.."})],
    "symlink-absolute": [("abs", "sym", {"link": "/etc/passwd"})],
    "hardlink-absolute": [("h", "lnk", {"link": "@OUTSIDE/victim"})],
    "hardlink-dotdot": [("h", "lnk", {"link": "../outside/victim"})],
    "device": [("null", "chr", {"dev": (1, 3), "mode": 0o666})],
    "fifo": [("pipe", "fifo", {"mode": 0o644})],
}

POLICIES = ["tar", "data", "context"]


def _tree(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for top, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(top) / name
            st = path.lstat()
            entry: dict[str, Any] = {"mode": oct(stat.S_IMODE(st.st_mode)), "type": stat.S_IFMT(st.st_mode)}
            entry["uid"] = st.st_uid
            if path.is_symlink():
                entry["link"] = os.readlink(path)
                entry.pop("mode")
            elif path.is_file():
                entry["data"] = path.read_bytes().decode()
            out[str(path.relative_to(root))] = entry
    return dict(sorted(out.items()))


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    if not outside.exists():
        outside.mkdir()
        (outside / "victim").write_text("victim")
    return outside


def _extra(policy: str) -> Callable[[tarfile.TarInfo, str], None] | None:
    if policy != "context":
        return None

    def check(member: tarfile.TarInfo, dest: str) -> None:
        safetar.check_hard_link_inside(member, dest)
        safetar.refuse_devices(member)

    return check


def _outcome(data: bytes, dest: Path, policy: str, force_fallback: bool, stream: bool) -> dict[str, Any]:
    dest.mkdir()
    old_umask = os.umask(0o022)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|" if stream else "r:") as tar:
            base = "tar" if policy == "context" else policy
            safetar.extract_all(tar, dest, base, extra=_extra(policy), force_fallback=force_fallback)  # type: ignore[arg-type]
    except tarfile.TarError as exc:
        return {"refused": type(exc).__name__}
    finally:
        os.umask(old_umask)
    return {"tree": _tree(dest)}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_fallback_agrees_with_the_standard_library(tmp_path: Path, case: str, policy: str) -> None:
    if not safetar.HAS_FILTERS:
        pytest.fail("the host's test interpreter has no tarfile filters to compare with")
    data = _tar(CASES[case], _outside(tmp_path))
    native = _outcome(data, tmp_path / "native", policy, force_fallback=False, stream=True)
    fallback = _outcome(data, tmp_path / "fallback", policy, force_fallback=True, stream=True)
    seekable = _outcome(data, tmp_path / "seekable", policy, force_fallback=True, stream=False)
    assert fallback == native
    assert seekable == native
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["victim"]


def test_refusals_are_the_expected_ones(tmp_path: Path) -> None:
    """Not just agreement: the hostile cases are refused under the policies that promise it, whatever Python."""
    expected = {
        ("dotdot", "tar"): "OutsideDestinationError",
        ("through-symlink", "tar"): "OutsideDestinationError",
        ("symlink-dotdot", "data"): "LinkOutsideDestinationError",
        ("symlink-absolute", "data"): "AbsoluteLinkError",
        ("hardlink-absolute", "data"): "AbsoluteLinkError",
        ("hardlink-absolute", "context"): "LinkOutsideDestinationError",
        ("hardlink-dotdot", "context"): "LinkOutsideDestinationError",
        ("device", "data"): "SpecialFileError",
        ("device", "context"): "SpecialFileError",
        ("fifo", "data"): "SpecialFileError",
    }
    for (case, policy), error in expected.items():
        dest = tmp_path / f"{case}-{policy}"
        got = _outcome(_tar(CASES[case], _outside(tmp_path)), dest, policy, force_fallback=True, stream=True)
        assert got == {"refused": error}, (case, policy)
    data = _tar(CASES["modes"] + CASES["absolute-name"], _outside(tmp_path))
    plain = _outcome(data, tmp_path / "m", "tar", True, True)["tree"]
    assert plain["suid"]["mode"] == "0o755"  # setuid and group/other write cleared
    assert plain["gw"]["mode"] == "0o755"
    assert plain["etc/abs"]["data"] == "x"  # a leading slash is stripped, as tar does


_OLD_PYTHON = "/usr/bin/python3.11"
_DRIVER = """
import io, json, os, sys, tarfile
sys.path.insert(0, sys.argv[1])
from runtime import safetar
assert not safetar.HAS_FILTERS, sys.version
results = {}
for key, (data, policy, dest) in json.loads(sys.stdin.read()).items():
    os.mkdir(dest)
    os.umask(0o022)
    extra = None
    if policy == "context":
        def extra(m, d):
            safetar.check_hard_link_inside(m, d)
            safetar.refuse_devices(m)
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes.fromhex(data)), mode="r|") as tar:
            safetar.extract_all(tar, dest, "tar" if policy == "context" else policy, extra=extra)
        results[key] = "ok"
    except tarfile.TarError as exc:
        results[key] = type(exc).__name__
print(json.dumps(results))
"""


def _old_python() -> str | None:
    if not os.path.exists(_OLD_PYTHON):
        return None
    probe = subprocess.run([_OLD_PYTHON, "-I", "-c", "import tarfile; print(hasattr(tarfile, 'data_filter'))"],
                           capture_output=True, text=True, check=False)
    return _OLD_PYTHON if probe.stdout.strip() == "False" else None


@pytest.mark.skipif(_old_python() is None, reason="no interpreter without tarfile filters on this host")
def test_real_old_interpreter_extracts_like_the_standard_library(tmp_path: Path) -> None:
    jobs = {}
    for case in CASES:
        for policy in POLICIES:
            data = _tar(CASES[case], _outside(tmp_path)).hex()
            jobs[f"{case}-{policy}"] = (data, policy, str(tmp_path / f"old-{case}-{policy}"))
    proc = subprocess.run([_OLD_PYTHON, "-I", "-c", _DRIVER, str(REPO)], input=json.dumps(jobs),
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    old = json.loads(proc.stdout)
    for key, (data, policy, dest) in jobs.items():
        native = _outcome(bytes.fromhex(data), tmp_path / f"native-{key}", policy, False, True)
        if "refused" in native:
            assert old[key] == native["refused"], key
        else:
            assert old[key] == "ok", key
            assert _tree(Path(dest)) == native["tree"], key
