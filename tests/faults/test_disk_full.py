"""A state dir on a small filesystem that fills up in the middle of a run (at a checkpoint, or while
round 2's uploads are parked on disk): the server stops loudly (exit 2, one line naming the full
disk) with what is on disk intact, and once space is freed
`serve --resume` finishes the run on the same model as a run that never ran out of space. Needs a
real small filesystem: a tmpfs mounted for the test (root with the right to mount); skips where
the machine does not allow it."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedser_server.state.store import read_checkpoint
from tests.conftest import free_port
from tests.faults import federation, raw

pytestmark = pytest.mark.timeout(300)

FS_MIB = 24  # the server wants three checkpoints (~1.1 MiB each) plus 16 MiB free at start


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a small filesystem needs root to mount a tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_MIB}m,mode=0700", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {FS_MIB} MiB tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = folder / "filler"
    block = b"\0" * (256 * 1024)
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


# where the full disk bites: the checkpoint after round 2 (updates kept in memory), or the parking
# of round 2's streamed updates (`incoming/`: updates above the inline limit are parked on disk)
WHERE = {
    "checkpoint": {},
    "parked-upload": {"federation.inline_model_max_bytes": 64 * 1024, "federation.round_timeout_s": 20.0},
}


@pytest.mark.parametrize("where", list(WHERE))
def test_a_disk_that_fills_up_mid_run_stops_it_loudly_and_resume_finishes_it(
        where: str, small_fs: Path, tmp_path: Path, fault_clients: list[Path], reference_model: dict, spawn) -> None:
    config = federation.config(**WHERE[where])
    port, state_dir = free_port(), small_fs / "state"
    first_log, second_log = tmp_path / "server1.log", tmp_path / "server2.log"
    hold = federation.Hold("upload", 2)  # every client has trained round 2 and waits to send it
    server = spawn(federation.serve_command(port, state_dir, federation.write_config(tmp_path, config)), first_log)
    clients = federation.Clients(f"127.0.0.1:{port}", fault_clients, config, hold)
    try:
        clients.start()
        raw.wait_for(hold.all_reached, 150, "round-2 updates")
        filler = _fill(small_fs)
        hold.release.set()
        assert server.wait(timeout=150) == 2, federation.log_tail(first_log)
        stopped = first_log.read_text()
        assert "No space left on device" in stopped or "disk" in stopped.lower(), federation.log_tail(first_log)
        assert "Traceback" not in stopped
        # what is on disk is intact: round 1's checkpoint (verified), its metrics line, no debris
        checkpoint = read_checkpoint(state_dir / "global.safetensors")
        assert checkpoint is not None and checkpoint[1] == 1
        assert federation.rounds_of(state_dir) == [1]
        assert not list(state_dir.glob(".*.tmp"))

        filler.unlink()
        resumed = spawn(federation.serve_command(port, state_dir, None), second_log)
        assert resumed.wait(timeout=180) == 0, federation.log_tail(second_log)
        clients.join()
    finally:
        hold.release.set()
        clients.stop()
    assert federation.rounds_of(state_dir) == [1, 2, 3, 4]
    assert clients.all_shut_down(), clients.errors
    federation.assert_same_model(federation.final_model(state_dir), reference_model)
    if where == "parked-upload":
        refused = [m.get("refused", {}) for m in federation.metrics_of(state_dir)]
        assert any("disk_full" in r for r in refused) or "disk_full" in stopped, refused
