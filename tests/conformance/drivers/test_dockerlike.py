"""Argument mapping, declared differences, the custom driver and the offline busybox image (no daemon needed)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from conformance.drivers import RUN_LABEL, driver_class, get_driver
from conformance.drivers.dockerlike import CustomDriver, busybox_rootfs_tar
from conformance.errors import DriverError
from conformance.targets import Target


def test_podman_argv_uses_the_run_configs_and_labels(local_target: Target) -> None:
    driver = get_driver("podman", local_target, "unit-1")
    argv = driver.argv(["run", "--rm", "busybox", "true"])
    session = driver.session  # type: ignore[attr-defined]
    assert len(session) < 25  # conmon stalls 20 s per run when tmp_dir paths are long
    assert argv[:3] == ["env", f"CONTAINERS_CONF={session}/containers.conf",
                        f"CONTAINERS_STORAGE_CONF={session}/storage.conf"]
    assert argv[3:] == ["podman", "run", "--label", f"{RUN_LABEL}=unit-1", "--rm", "busybox", "true"]


def test_podman_push_to_plain_http_registry_gets_tls_verify_false(local_target: Target) -> None:
    driver = get_driver("podman", local_target, "unit-1")
    assert driver.argv(["push", "127.0.0.1:5000/x:1"])[-3:] == ["push", "--tls-verify=false", "127.0.0.1:5000/x:1"]
    assert driver.argv(["pull", "localhost:5000/x"])[-2] == "--tls-verify=false"
    assert driver.argv(["push", "registry.example/x"])[-2:] == ["push", "registry.example/x"]
    docker = get_driver("docker", local_target, "unit-1")
    assert docker.argv(["push", "127.0.0.1:5000/x:1"])[-2:] == ["push", "127.0.0.1:5000/x:1"]


def test_podman_configs_carry_the_traps(local_target: Target) -> None:
    driver = get_driver("podman", local_target, "unit-2")
    conf = driver.containers_conf()  # type: ignore[attr-defined]
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]' in conf
    session = driver.session  # type: ignore[attr-defined]
    assert f'tmp_dir = "{session}/tmp"' in conf and 'lock_type = "file"' in conf
    assert f'graphroot = "{session}/root"' in driver.storage_conf()  # type: ignore[attr-defined]


def test_docker_uses_debians_client_and_its_own_daemon_socket(local_target: Target) -> None:
    driver = get_driver("docker", local_target, "unit-3")
    argv = driver.argv(["ps"])
    assert argv[0] == "/usr/bin/docker" and argv[1] == "-H" and argv[2].startswith("unix:///run/cfdk-")
    assert len(argv[2]) < 100
    assert driver.features()["runtime.inspect_oom_killed"] is True
    assert get_driver("podman", local_target, "unit-3").features()["runtime.inspect_oom_killed"] is False


def test_custom_driver_takes_a_cli_path(local_target: Target) -> None:
    cls = driver_class("custom:/usr/bin/docker")
    assert issubclass(cls, CustomDriver)
    driver = cls(local_target, "unit-4")
    assert driver.argv(["run", "busybox"])[:2] == ["/usr/bin/docker", "run"]
    assert driver.name == "custom:/usr/bin/docker"
    with pytest.raises(DriverError, match="needs a CLI path"):
        driver_class("custom:")
    with pytest.raises(DriverError, match="must be an Engine API socket"):
        driver_class("docker:x")
    with pytest.raises(DriverError, match="one of crun, runc"):
        driver_class("podman:x")
    runc = driver_class("podman:runc")(local_target, "unit-4")
    assert runc.name == "podman:runc" and runc.oci_choice == "runc"  # type: ignore[attr-defined]
    with pytest.raises(DriverError, match="unknown runtime"):
        driver_class("nosuch")


def test_custom_driver_with_missing_cli_fails_prepare(local_target: Target) -> None:
    driver = driver_class("custom:/nonexistent/nerdctl")(local_target, "unit-5")
    with pytest.raises(DriverError, match="not installed"):
        driver.prepare()


def test_busybox_rootfs_tar_has_shell_and_applets(tmp_path: Path) -> None:
    path = busybox_rootfs_tar(tmp_path / "rootfs.tar")
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        assert {"bin/busybox", "bin/sh", "etc/passwd", "tmp"} <= names
        assert tar.getmember("bin/sh").linkname == "/bin/busybox"
        assert tar.getmember("tmp").mode == 0o1777
