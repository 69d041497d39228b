"""Real builds with ``refrt build``: real overlay mounts, real RUN containers, a busybox base made offline.

One temporary refrt root per module; the first build populates the cache the later tests rely on.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runtime.store.store import host_architecture

pytestmark = pytest.mark.slow  # real builds: a second or more each

REPO = Path(__file__).resolve().parents[3]

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
ARG GREETING=hello
FROM ${BASE} AS builder
ARG GREETING
SHELL ["/bin/sh", "-ec"]
WORKDIR /src
COPY --chmod=0755 tools/*.sh ./
COPY data/ ./data/
RUN ./make.sh "$GREETING" > /src/out.txt
RUN ["/bin/sh", "-c", "echo exec-form > /src/exec.txt"]
RUN <<EOF
echo heredoc-one > /src/h1.txt
echo heredoc-two >> /src/h1.txt
EOF
RUN <<'EOF'
#!/bin/sh
echo "shebang $0" > /src/shebang.txt
EOF
COPY <<EOF /src/generated.conf
greeting=${GREETING}
it's "quoted" \\$HOME
EOF

FROM busybox AS onbuild-base
ONBUILD RUN echo triggered > /onbuild.txt

FROM onbuild-base
LABEL org.example.name="refrt test" \\
      version=1
MAINTAINER someone
ENV APP_HOME=/app PATH=/app/bin:$PATH
WORKDIR $APP_HOME
COPY --from=builder /src/out.txt /src/exec.txt /src/h1.txt /src/shebang.txt /src/generated.conf ./
COPY --from=builder --chown=nobody:nobody /src/data data
ADD archive.tar.gz /app/unpacked/
ADD --chown=65534:65534 plain.txt /app/
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["true"]
USER nobody
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $APP_HOME $(id -u) $(pwd) $(cat out.txt)"]
"""


@dataclass
class Result:
    rc: int
    out: str
    err: str


def refrt(root: Path, *args: str, stdin: str | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime", "--root", str(root), *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def steps(err: str) -> list[tuple[str, bool]]:
    """(title, cached?) of every build step in a progress log (not the load/export bookkeeping)."""
    titles: dict[str, str] = {}
    cached: set[str] = set()
    for line in err.splitlines():
        m = re.match(r"#(\d+) (\[.*)$", line)
        if m and not m.group(2).startswith("[internal]"):
            titles[m.group(1)] = m.group(2)
        m = re.match(r"#(\d+) CACHED$", line)
        if m:
            cached.add(m.group(1))
    return [(title, num in cached) for num, title in titles.items()]


def make_context(path: Path) -> Path:
    (path / "tools").mkdir(parents=True)
    (path / "tools" / "make.sh").write_text('#!/bin/sh\necho "$1 from make"\n')
    os.chmod(path / "tools" / "make.sh", 0o644)  # COPY --chmod makes it executable
    (path / "data" / "nested").mkdir(parents=True)
    (path / "data" / "a").write_text("a\n")
    (path / "data" / "nested" / "b").write_text("b\n")
    (path / "data" / "secret").write_text("do not copy\n")
    (path / "README.md").write_text("ignored\n")
    (path / ".dockerignore").write_text("# comment\ndata/secret\n*.md\n")
    (path / "plain.txt").write_text("plain\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("pkg/file")
        data = b"from the archive\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (path / "archive.tar.gz").write_bytes(buf.getvalue())
    (path / "Dockerfile").write_text(DOCKERFILE)
    return path


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


@dataclass
class Env:
    root: Path
    ctx: Path
    first: Result
    image_id: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("build")
    root = base / "root"
    boot = refrt(root, "image", "bootstrap", "busybox")
    assert boot.rc == 0, boot.err
    ctx = make_context(base / "ctx")
    first = refrt(root, "build", "-t", "app:1", "-t", "app:latest", "--label", "from.cli=yes", str(ctx))
    assert first.rc == 0, first.err
    image_id = store_image(root, "app:1")["id"]
    yield Env(root, ctx, first, image_id)
    assert mounts_under(base) == []
    assert not list((root / "build-cache" / "tmp").iterdir())
    containers = root / "containers"
    assert not containers.is_dir() or not list(containers.iterdir())  # RUN and `run --rm` leave none


def store_image(root: Path, ref: str) -> dict[str, Any]:
    code = (
        "import json,sys\n"
        "from runtime.paths import Paths\nfrom runtime.store.store import Store\n"
        f"i=Store(Paths.resolve({str(root)!r})).resolve({ref!r})\n"
        "print(json.dumps({'id':i.id,'config':i.config,'layers':[str(l.path) for l in i.layers],"
        "'tags':i.repo_tags}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def image_file(image: dict[str, Any], path: str) -> Path:
    """The file ``path`` of the image, from its unpacked layers (top first; no whiteouts in these images)."""
    for layer in reversed(image["layers"]):
        candidate = Path(layer) / path.lstrip("/")
        if os.path.lexists(candidate):
            return candidate
    raise AssertionError(f"{path} not in image")


def layer_count(root: Path) -> int:
    return len(list((root / "store" / "layers").iterdir()))


def test_multistage_image_config(env: Env) -> None:
    image = store_image(env.root, "app:latest")
    assert image["id"] == env.image_id
    cfg = image["config"]["config"]
    assert "APP_HOME=/app" in cfg["Env"]
    assert "PATH=/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in cfg["Env"]
    assert cfg["WorkingDir"] == "/app"
    assert cfg["User"] == "nobody"
    assert cfg["Labels"] == {"org.example.name": "refrt test", "version": "1", "from.cli": "yes"}
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 30 * 10**9, "Timeout": 5 * 10**9, "Retries": 3}
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"]
    assert cfg["Cmd"] == ["echo $APP_HOME $(id -u) $(pwd) $(cat out.txt)"]
    assert not cfg.get("OnBuild")  # the base's trigger ran and is not inherited
    assert image["config"]["author"] == "someone"


def test_one_layer_per_filesystem_step(env: Env) -> None:
    image = store_image(env.root, "app:1")
    history = image["config"]["history"]
    with_layer = [h["created_by"].split()[0] for h in history if not h.get("empty_layer")]
    assert len(with_layer) == len(image["config"]["rootfs"]["diff_ids"]) == len(image["layers"])
    assert with_layer[1:] == ["RUN", "WORKDIR", "COPY", "COPY", "ADD", "ADD"]
    empty = [h["created_by"].split()[0] for h in history if h.get("empty_layer")]
    assert empty == [
        "ONBUILD",
        "LABEL",
        "MAINTAINER",
        "ENV",
        "EXPOSE",
        "VOLUME",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "USER",
        "ENTRYPOINT",
        "CMD",
    ]
    shown = refrt(env.root, "history", "--no-trunc", "app:1")
    if shown.rc == 0:  # `refrt history` (runtime/cli/images.py) lists the same steps
        assert "COPY --from=builder --chown=nobody:nobody /src/data /app/data" in shown.out


def test_files_in_image(env: Env) -> None:
    image = store_image(env.root, "app:1")
    assert image_file(image, "/app/out.txt").read_text() == "hello from make\n"
    assert image_file(image, "/app/exec.txt").read_text() == "exec-form\n"
    assert image_file(image, "/app/h1.txt").read_text() == "heredoc-one\nheredoc-two\n"
    assert image_file(image, "/app/shebang.txt").read_text() == "shebang /dev/pipes/EOF\n"
    assert image_file(image, "/app/generated.conf").read_text() == 'greeting=hello\nit\'s "quoted" $HOME\n'
    assert image_file(image, "/onbuild.txt").read_text() == "triggered\n"
    assert image_file(image, "/app/unpacked/pkg/file").read_text() == "from the archive\n"
    assert image_file(image, "/app/data/nested/b").read_text() == "b\n"
    assert image_file(image, "/app/data/a").stat().st_uid == 65534
    assert image_file(image, "/app/plain.txt").stat().st_uid == 65534
    with pytest.raises(AssertionError):
        image_file(image, "/app/data/secret")  # .dockerignore
    for layer in image["layers"][1:]:  # RUN's /etc/hosts-style mount points are not in the layers
        assert not (Path(layer) / "etc" / "hosts").exists()


def test_image_runs_with_its_config(env: Env) -> None:
    result = refrt(env.root, "run", "--rm", "--network", "none", "app:1")  # networking is not under test
    assert result.rc == 0, result.err
    assert result.out.strip() == "/app 65534 /app hello from make"


def test_rebuild_is_fully_cached(env: Env) -> None:
    layers = layer_count(env.root)
    again = refrt(env.root, "build", "-t", "app:1", "--label", "from.cli=yes", str(env.ctx))
    assert again.rc == 0, again.err
    done = steps(again.err)
    assert len(done) == len(steps(env.first.err)) == 30  # 11 + 2 + 16 + the ONBUILD trigger
    assert all(cached for _, cached in done), done
    assert layer_count(env.root) == layers
    assert store_image(env.root, "app:1")["id"] == env.image_id


def test_quiet_prints_only_the_id(env: Env) -> None:
    result = refrt(env.root, "build", "-q", "--label", "from.cli=yes", str(env.ctx))
    assert result.rc == 0, result.err
    assert result.out == env.image_id + "\n"
    assert result.err == ""


def test_changed_file_invalidates_from_its_copy_on(env: Env, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    shutil.copytree(env.ctx, ctx, symlinks=True)
    (ctx / "data" / "a").write_text("changed\n")
    layers = layer_count(env.root)
    result = refrt(env.root, "build", "-t", "app:2", str(ctx))
    assert result.rc == 0, result.err
    got = steps(result.err)
    first_rebuilt = next(i for i, (title, _) in enumerate(got) if "COPY data/ ./data/" in title)
    builder_steps = [s for s in got if s[0].startswith("[builder")]
    assert all(cached for _, cached in got[:first_rebuilt])
    assert not any(cached for _, cached in builder_steps[first_rebuilt:])
    final = [s for s in got if s[0].startswith("[stage-2")]
    copy_from = next(i for i, (title, _) in enumerate(final) if "COPY --from=builder" in title)
    assert all(cached for _, cached in final[:copy_from])
    assert not any(cached for _, cached in final[copy_from:])
    assert layer_count(env.root) > layers


def test_no_cache_rebuilds(env: Env, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo x > /x\nENV A=1\n")
    first = refrt(env.root, "build", str(tmp_path))
    assert first.rc == 0, first.err
    again = refrt(env.root, "build", "--no-cache", str(tmp_path))
    assert again.rc == 0, again.err
    assert [cached for _, cached in steps(again.err)] == [True, False, False]  # FROM a local image: CACHED


def test_target_and_build_arg(env: Env) -> None:
    result = refrt(env.root, "build", "--target", "builder", "--build-arg", "GREETING=hey", "-t", "b:1", str(env.ctx))
    assert result.rc == 0, result.err
    assert not any(t.startswith("[stage-2") or t.startswith("[onbuild-base") for t, _ in steps(result.err))
    image = store_image(env.root, "b:1")
    assert image_file(image, "/src/out.txt").read_text() == "hey from make\n"
    history = image["config"]["history"]
    assert any(h["created_by"].startswith("RUN |1 GREETING=hey ") for h in history)
    bad = refrt(env.root, "build", "--target", "nope", str(env.ctx))
    assert (bad.rc, 'target stage "nope" could not be found' in bad.err) == (1, True)


def test_from_stdin_dockerfile_and_scratch(env: Env, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    result = refrt(env.root, "build", "-f", "-", "-t", "s:1", str(tmp_path), stdin="FROM scratch\nCOPY f /f\n")
    assert result.rc == 0, result.err
    image = store_image(env.root, "s:1")
    assert len(image["layers"]) == 1
    assert image_file(image, "/f").read_text() == "x"


# failures: (Dockerfile, files, fragment, expected line in message)
FAILURES = [
    ("FROM busybox\nRUN echo ok\nRUN exit 3\n", {}, "exit code: 3", "line 3"),
    ("FROM busybox\n\nBOGUS x\n", {}, "unknown instruction: BOGUS", "Dockerfile:3:"),
    ("FROM busybox\nCOPY missing /x\n", {}, "file not found in build context", "line 2"),
    ("FROM busybox\nCOPY ../outside /x\n", {}, "forbidden path outside the build context", "line 2"),
    ("FROM busybox\nADD http://127.0.0.1/x /x\n", {}, "from a URL is not supported", "line 2"),
    ("FROM scratch\nRUN true\n", {}, "could not be started", "line 2"),
    (
        "ARG V\nFROM $V\n",
        {},
        "base name ($V) should not be blank",
        "Dockerfile:2:",
    ),  # no /bin/sh to start: still exit 1
    ("FROM busybox\nCOPY a b /file\n", {"a": "1", "b": "2"}, "must be a directory and end with a /", "line 2"),
    ('FROM busybox\nENV A="${B:?must be set}"\n', {}, "B: must be set", "Dockerfile:2:"),
    # a registry on a closed local port: FROM of an absent image tries to pull it, and fails cleanly
    ("FROM 127.0.0.1:9/nothing:1\n", {}, "127.0.0.1:9/nothing:1", "line 1"),
]


@pytest.mark.parametrize(("text", "files", "fragment", "where"), FAILURES)
def test_build_failures_exit_1(
    env: Env, tmp_path: Path, text: str, files: dict[str, str], fragment: str, where: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(text)
    for name, content in files.items():
        (ctx / name).write_text(content)
    result = refrt(env.root, "build", "-t", "broken:1", str(ctx))
    assert result.rc == 1, result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("refrt: ") and fragment in last and where in last, last
    assert "broken:1" not in refrt(env.root, "images").out
    assert mounts_under(env.root) == []  # a failed step unmounts and removes its scratch space
    assert not list((env.root / "build-cache" / "tmp").iterdir())


@pytest.mark.parametrize("args", [["--label", "novalue"], ["-t", "Bad:Name"], ["--build-arg", "=x"]])
def test_bad_command_line_exits_125(env: Env, args: list[str]) -> None:
    result = refrt(env.root, "build", *args, str(env.ctx))
    assert result.rc == 125, result.err
    assert "#1" not in result.err  # refused before any build work


ARG_SCOPING = """\
ARG V=meta
ARG BASE=busybox
FROM --platform=$BUILDPLATFORM $BASE AS one
ARG TARGETARCH
RUN echo "$TARGETARCH" > /arch
RUN echo "[$V]" > /unseen
ARG V
RUN echo "[$V]" > /seen
ARG X=from-arg
ENV X=from-env
RUN echo "$X" > /env-wins
ARG Y=${V}-default
RUN echo "$Y \\$Y" > /escaped
ENV Z=${UNSET:-fallback}
COPY --from=busybox /etc/passwd /copied-from-image
FROM one
RUN echo "[$V]" > /second-stage
USER nobody
WORKDIR /home/nobody/work
RUN touch made-by-nobody
RUN --network=none ls /sys/class/net > /home/nobody/work/links
"""


def test_arg_scoping_and_copy_from_image(env: Env, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(ARG_SCOPING)
    result = refrt(env.root, "build", "-t", "args:1", "--build-arg", "V=cli", str(tmp_path))
    assert result.rc == 0, result.err
    image = store_image(env.root, "args:1")
    assert image_file(image, "/arch").read_text() == host_architecture() + "\n"  # BuildKit's automatic ARGs
    assert image_file(image, "/unseen").read_text() == "[]\n"  # a global ARG is not visible until re-declared
    assert image_file(image, "/seen").read_text() == "[cli]\n"  # --build-arg wins over the default
    assert image_file(image, "/env-wins").read_text() == "from-env\n"
    assert image_file(image, "/escaped").read_text() == "cli-default $Y\n"
    assert image_file(image, "/second-stage").read_text() == "[]\n"  # ARGs do not cross FROM
    assert image_file(image, "/copied-from-image").read_text().startswith("root:x:0:0")
    assert "Z=fallback" in image["config"]["config"]["Env"]
    # WORKDIR creates the directory as the USER (BuildKit), so an unprivileged RUN can write there
    assert image_file(image, "/home/nobody/work").stat().st_uid == 65534
    assert image_file(image, "/home/nobody/work/made-by-nobody").stat().st_uid == 65534
    assert image_file(image, "/home/nobody/work/links").read_text() == "lo\n"  # RUN --network=none
    assert not any(e.startswith(("V=", "Y=")) for e in image["config"]["config"]["Env"])  # ARGs are not ENV
