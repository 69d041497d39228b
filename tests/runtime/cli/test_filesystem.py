"""``cp``, ``diff``, ``export`` and ``commit`` on refrt, each compared with docker 20.10 on a real dockerd.

The same scenario runs on both engines (``engine`` is parametrized): a container that adds, changes and deletes
files; then ``diff`` must print the same lines, ``cp`` in both directions must leave the same trees, ``commit
-c`` must give an image whose command, environment and files are the same, ``export`` must hold the files, and
the failures must exit as docker's do.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.container.conftest import Refrt, unique

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(params=["refrt", pytest.param("docker", marks=pytest.mark.peer)])
def cli(request: pytest.FixtureRequest, refrt: Refrt) -> Cli:
    if request.param == "refrt":
        return refrt
    from tests.runtime.daemon.conftest import docker

    host = request.getfixturevalue("dockerd")

    def run(*args: str, input: str | None = None, **_: object) -> subprocess.CompletedProcess[str]:
        words = list(args)
        if words and words[0] == "run":
            words.insert(1, "--pull=never")
        return docker(host, *words, input=input)

    return run


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else "/") for p in sorted(root.rglob("*"))}


def test_files_as_docker(cli: Cli, tmp_path: Path) -> None:
    name = unique("files")
    made = cli("run", "-d", "--name", name, "busybox", "sh", "-c",
               "mkdir -p /data/sub && echo hello > /data/f && echo s > /data/sub/g && rm /etc/passwd && sleep 300")
    assert made.returncode == 0, made.stderr
    image = f"committed-{name}:v1"
    try:
        def has_data() -> bool:
            return cli("exec", name, "test", "-f", "/data/sub/g").returncode == 0

        for _ in range(100):
            if has_data():
                break
        diff = cli("diff", name)
        assert sorted(diff.stdout.splitlines()) == ["A /data", "A /data/f", "A /data/sub", "A /data/sub/g",
                                                    "C /etc", "D /etc/passwd"], diff.stdout  # docker: walk order
        out = tmp_path / "out"
        out.mkdir()
        for src, dst in ((f"{name}:/data/f", str(out)), (f"{name}:/data", str(out / "d2")),
                         (f"{name}:/data/.", str(out / "d3"))):
            copied = cli("cp", src, dst)
            assert copied.returncode == 0, (src, copied.stderr)
        assert _tree(out) == {"f": "hello\n", "d2": "/", "d2/f": "hello\n", "d2/sub": "/", "d2/sub/g": "s\n",
                              "d3": "/", "d3/f": "hello\n", "d3/sub": "/", "d3/sub/g": "s\n"}
        local = tmp_path / "in.txt"
        local.write_text("local\n")
        assert cli("cp", str(local), f"{name}:/data/").returncode == 0
        assert cli("cp", str(local), f"{name}:/data/renamed").returncode == 0
        assert cli("exec", name, "cat", "/data/in.txt", "/data/renamed").stdout == "local\nlocal\n"
        missing = cli("cp", f"{name}:/nope", str(out))
        assert missing.returncode == 1 and f"No such container:path: {name}:/nope" in missing.stderr
        nodir = cli("cp", f"{name}:/data/f", str(tmp_path / "no" / "x"))
        assert nodir.returncode == 1 and "does not exist" in nodir.stderr
        bad_change = cli("commit", "-c", "FROM x", name)
        assert bad_change.returncode == 1 and "from is not a valid change command" in bad_change.stderr
        committed = cli("commit", "-c", 'CMD ["cat", "/data/f"]', "-c", "ENV A=1", "-m", "msg", name, image)
        assert committed.returncode == 0 and committed.stdout.startswith("sha256:"), committed.stderr
        assert cli("run", "--rm", image).stdout == "hello\n"
        probe = cli("run", "--rm", image, "sh", "-c", "echo $A; cat /data/in.txt; test -e /etc/passwd || echo gone")
        assert probe.stdout == "1\nlocal\ngone\n", probe
    finally:
        cli("rm", "-f", name)
        cli("rmi", image)


def test_export_holds_the_files(refrt: Refrt, tmp_path: Path) -> None:
    name = unique("export")
    refrt("run", "-d", "--name", name, "busybox", "sh", "-c", "echo x > /marker && sleep 300", check=True)
    try:
        target = tmp_path / "fs.tar"
        for _ in range(100):
            if refrt("exec", name, "test", "-f", "/marker").returncode == 0:
                break
        done = refrt("export", "-o", str(target), name)
        assert done.returncode == 0, done.stderr
        with tarfile.open(target) as tar:
            names = set(tar.getnames())
            assert {"marker", "bin/sh", "etc/group"} <= names
            marker = tar.extractfile("marker")
            assert marker is not None and marker.read() == b"x\n"
        piped = subprocess.run(refrt.argv("export", name), capture_output=True, env=refrt.env, timeout=60)
        assert piped.returncode == 0
        with tarfile.open(fileobj=io.BytesIO(piped.stdout)) as streamed:
            assert "marker" in streamed.getnames()
    finally:
        refrt("rm", "-f", name)
