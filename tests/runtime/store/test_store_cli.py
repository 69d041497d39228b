"""The image commands through refrt's real command line (in-process ``main``, plus one real subprocess)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.store import Image, Layer, Store  # noqa: F401

AddTar = Callable[..., Layer]
TarBytes = Callable[..., bytes]
Listing = Callable[[Path], list[tuple[str, int]]]


class Refrt:
    """Runs ``refrt --root ROOT ...`` in-process and captures its output."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--root", str(self.root), *args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def refrt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Refrt:
    r = Refrt(tmp_path / "root", capsys)
    code, out, _ = r("image", "bootstrap", "busybox")
    assert code == 0 and out.startswith("sha256:")
    return r


def test_images_listing_quiet_digests_and_format(refrt: Refrt) -> None:
    code, out, _ = refrt("images")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[1].split()[:2] == ["busybox", "latest"] and lines[1].endswith("MB")
    code, quiet, _ = refrt("images", "-q")
    assert len(quiet.strip()) == 12
    code, out, _ = refrt("images", "--digests")
    assert "DIGEST" in out.splitlines()[0]
    code, out, _ = refrt("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert out.strip() == f"busybox:latest {quiet.strip()}"
    code, out, _ = refrt("images", "--format", "{{json .}}")
    assert json.loads(out)["Repository"] == "busybox"
    code, out, _ = refrt("images", "--format", "table {{.Repository}}\t{{.ID}}\t{{.CreatedSince}}")
    assert out.splitlines()[0].split() == ["REPOSITORY", "IMAGE", "ID", "CREATED"]
    assert out.splitlines()[1].split()[:2] == ["busybox", quiet.strip()]
    code, out, _ = refrt("image", "ls", "nomatch")
    assert len(out.splitlines()) == 1


def test_tag_rmi_and_exit_codes(refrt: Refrt) -> None:
    assert refrt("tag", "busybox", "localhost:5000/my/bb:v1")[0] == 0
    code, out, _ = refrt("images", "--format", "{{.Repository}} {{.Tag}}")
    assert sorted(out.splitlines()) == ["busybox latest", "localhost:5000/my/bb v1"]
    code, out, _ = refrt("rmi", "localhost:5000/my/bb:v1")
    assert (code, out.strip()) == (0, "Untagged: localhost:5000/my/bb:v1")
    code, _, err = refrt("rmi", "nothere")
    assert code == 1 and "No such image: nothere" in err
    code, _, err = refrt("tag", "nothere", "x")
    assert code == 1 and "No such image" in err
    code, _, err = refrt("tag", "busybox", "Bad:Name")
    assert code == 125 and "invalid reference" in err


def test_rmi_of_an_image_in_use_is_refused(refrt: Refrt) -> None:
    image_id = json.loads(refrt("image", "inspect", "busybox")[1])[0]["Id"]
    cdir = refrt.root / "containers" / "feedface"
    cdir.mkdir(parents=True)
    (cdir / "config.json").write_text(json.dumps({"Image": image_id}))
    code, _, err = refrt("rmi", "busybox")
    assert code == 1 and "container feedface is using" in err
    assert refrt("images", "-q")[1].strip() == image_id[7:19]
    code, out, _ = refrt("rmi", "-f", "busybox")
    assert code == 0 and out.strip() == "Untagged: busybox:latest"
    assert refrt("images", "--format", "{{.Repository}} {{.ID}}")[1].strip() == f"<none> {image_id[7:19]}"


def test_history_and_inspect(refrt: Refrt) -> None:
    code, out, _ = refrt("history", "busybox")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["IMAGE", "CREATED"] and "refrt image bootstrap busybox" in lines[1]
    assert "2.14MB" in lines[1] or "MB" in lines[1]
    code, out, _ = refrt("history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}", "busybox")
    created_by, size = out.strip().split("|")
    assert created_by.startswith("refrt image bootstrap busybox (BusyBox v") and size.endswith("MB")
    code, out, _ = refrt("image", "inspect", "busybox")
    doc = json.loads(out)[0]
    assert doc["RepoTags"] == ["busybox:latest"] and doc["Os"] == "linux"
    assert doc["RootFS"]["Type"] == "layers" and len(doc["RootFS"]["Layers"]) == 1
    assert doc["GraphDriver"]["Name"] == "overlay2" and Path(doc["GraphDriver"]["Data"]["UpperDir"]).is_dir()
    assert doc["Config"]["Cmd"] == ["sh"]
    code, out, _ = refrt("image", "inspect", "-f", "{{.Config.Cmd}} {{json .Config.Cmd}} {{.Os}}", "busybox")
    assert out.strip() == '[sh] ["sh"] linux'
    code, out, err = refrt("image", "inspect", "busybox", "missing")
    assert code == 1 and len(json.loads(out)) == 1 and "No such image: missing" in err


def test_import_save_load_and_prune(
    refrt: Refrt, tmp_path: Path, tar_bytes: TarBytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(tar_bytes([("etc", "dir"), ("etc/motd", "file", b"hi")]))
    code, out, _ = refrt("import", "-c", 'CMD ["cat", "/etc/motd"]', "-m", "msg", str(tarball), "rootfs:1")
    assert code == 0 and out.startswith("sha256:")
    imported = out.strip()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(tarball.read_bytes())))
    code, out, _ = refrt("import", "-")
    assert code == 0 and out.strip() != imported  # a new "created" time: a new id, untagged
    archive = tmp_path / "out.tar"
    assert refrt("save", "-o", str(archive), "busybox", "rootfs:1")[0] == 0
    code, out, _ = refrt("image", "prune", "-f")
    assert code == 0 and "deleted: sha256:" in out and "Total reclaimed space" in out
    assert refrt("rmi", "busybox", "rootfs:1")[0] == 0
    assert refrt("images", "-q")[1] == ""
    code, out, _ = refrt("load", "-i", str(archive))
    assert code == 0 and out.splitlines() == ["Loaded image: busybox:latest", "Loaded image: rootfs:1"]
    assert refrt("image", "inspect", "-f", "{{.Id}}", "rootfs:1")[1].strip() == imported
    code, _, err = refrt("load", "-i", str(tmp_path / "missing.tar"))
    assert code == 125 and "cannot open" in err
    code, _, err = refrt("save", "-o", str(tmp_path / "x.tar"), "nothere")
    assert code == 1 and not (tmp_path / "x.tar").exists()


def test_real_subprocess_pipes_save_into_load(tmp_path: Path) -> None:
    """``refrt save busybox | refrt load`` between two roots, as a user would type it."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    one = [sys.executable, "-m", "runtime", "--root", str(tmp_path / "one")]
    two = [sys.executable, "-m", "runtime", "--root", str(tmp_path / "two")]
    subprocess.run([*one, "image", "bootstrap", "busybox"], check=True, env=env, capture_output=True)
    save = subprocess.Popen([*one, "save", "busybox"], stdout=subprocess.PIPE, env=env)
    load = subprocess.run([*two, "load"], stdin=save.stdout, capture_output=True, env=env, timeout=60)
    assert save.wait(timeout=60) == 0
    assert load.returncode == 0 and load.stdout.decode().strip() == "Loaded image: busybox:latest"
    ids = [subprocess.run([*r, "images", "-q"], capture_output=True, env=env).stdout for r in (one, two)]
    assert ids[0] == ids[1] and len(ids[0].strip()) == 12
