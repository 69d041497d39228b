"""``build -`` (a Dockerfile or a tar context on stdin), ``--iidfile`` and ``--progress``, as docker's."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from tests.runtime.container.conftest import REPO, Refrt


def _stdin_build(refrt: Refrt, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(refrt.argv("build", *args, "-"), input=data, capture_output=True, env=refrt.env,
                          cwd=REPO, timeout=300)


def test_dockerfile_on_stdin_and_iidfile(refrt: Refrt, tmp_path: Path) -> None:
    iid = tmp_path / "iid"
    built = _stdin_build(refrt, b"FROM busybox\nRUN echo built > /b\n", "-q", "--iidfile", str(iid),
                         "--progress=plain", "-t", "stdin-df")
    assert built.returncode == 0, built.stderr
    assert iid.read_text() == built.stdout.decode().strip() and iid.read_text().startswith("sha256:")
    try:
        assert refrt("run", "--rm", "stdin-df", "cat", "/b").stdout == "built\n"
    finally:
        refrt("rmi", "stdin-df")


def test_tar_context_on_stdin(refrt: Refrt) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("Dockerfile", b"FROM busybox\nCOPY x /x\n"), ("x", b"content\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    built = _stdin_build(refrt, buf.getvalue(), "-t", "stdin-tar")
    assert built.returncode == 0, built.stderr
    try:
        assert refrt("run", "--rm", "stdin-tar", "cat", "/x").stdout == "content\n"
    finally:
        refrt("rmi", "stdin-tar")
    both = _stdin_build(refrt, b"", "-f", "-")
    assert both.returncode == 125 and b"can't use stdin for both" in both.stderr
