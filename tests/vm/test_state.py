"""State files and the reaper: what a SIGKILLed harness leaves is found and removed, and nothing else is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vm import state
from vm.state import VmRecord, load_records, process_start_time, reap_orphans


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _record(root: Path, vm_id: str, owner: int | None, pid: int | None) -> VmRecord:
    record = VmRecord(
        vm_id=vm_id,
        backend="qemu",
        run_dir=str(root / vm_id),
        owner_pid=owner,
        owner_start=process_start_time(owner) if owner else None,
        pid=pid,
        pid_start=process_start_time(pid) if pid else None,
    )
    record.save()
    (root / vm_id / "disk.qcow2").write_bytes(b"overlay")
    return record


def test_orphans_are_killed_and_removed_live_and_kept_ones_stay(tmp_path: Path) -> None:
    orphan_vm = subprocess.Popen(["sleep", "300"])
    live_vm = subprocess.Popen(["sleep", "300"])
    kept_vm = subprocess.Popen(["sleep", "300"])
    try:
        _record(tmp_path, "orphan", owner=_dead_pid(), pid=orphan_vm.pid)
        _record(tmp_path, "live", owner=os.getpid(), pid=live_vm.pid)
        _record(tmp_path, "kept", owner=None, pid=kept_vm.pid)
        removed = reap_orphans(root=tmp_path)
        assert [r.vm_id for r in removed] == ["orphan"]
        assert orphan_vm.wait(timeout=10) is not None
        assert not (tmp_path / "orphan").exists()
        assert live_vm.poll() is None and kept_vm.poll() is None
        assert {r.vm_id for r in load_records(tmp_path)} == {"live", "kept"}
        assert {r.vm_id for r in reap_orphans(everything=True, root=tmp_path)} == {"live", "kept"}
        assert live_vm.wait(timeout=10) is not None and kept_vm.wait(timeout=10) is not None
        assert list(tmp_path.iterdir()) == []
    finally:
        for proc in (orphan_vm, live_vm, kept_vm):
            proc.kill()
            proc.wait()


def test_a_recycled_pid_is_never_killed(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        record = _record(tmp_path, "recycled", owner=_dead_pid(), pid=bystander.pid)
        record.pid_start = (record.pid_start or 0) + 12345  # the recorded VM started at another time
        record.save()
        assert [r.vm_id for r in reap_orphans(root=tmp_path)] == ["recycled"]
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_state_file_round_trip_and_unreadable_directories(tmp_path: Path) -> None:
    record = _record(tmp_path, "vm1", owner=None, pid=None)
    record.extra["key"] = "/k"
    record.save()
    loaded = load_records(tmp_path)
    assert loaded == [record]
    assert json.loads((tmp_path / "vm1" / state.STATE_FILE).read_text())["extra"] == {"key": "/k"}
    # A fresh directory without a state file may belong to a harness writing it right now: left alone.
    (tmp_path / "young").mkdir()
    assert [r.vm_id for r in load_records(tmp_path)] == ["vm1"]


def test_process_start_time_of_self_and_of_nothing() -> None:
    assert process_start_time(os.getpid()) is not None
    assert process_start_time(_dead_pid()) is None


@pytest.mark.parametrize("pid", [None, 0])
def test_no_pid_means_nothing_to_kill(pid: int | None) -> None:
    assert not state.same_process(pid, None)
    state.kill_process(pid, None)  # must not raise
    assert sys.modules["vm.state"] is state
