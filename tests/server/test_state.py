"""The state dir: one atomic checkpoint per round, metrics reconciled after a crash, clear errors at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedser_server import app as server_app
from fedser_server.state import store as store_module
from fedser_server.state.store import StateStore
from fedser_shared.errors import StateError
from tests.faults import raw


def test_the_round_lives_inside_the_checkpoint(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = {"w.x": np.arange(3, dtype=np.float32)}
    store.save_global(state, 7, {"round": 7, "n_updates": 2})
    # a crash between the checkpoint and progress.json must not make the checkpoint lie
    (tmp_path / "progress.json").write_text(json.dumps({"completed_round": 6}))
    loaded, round_index, record = store.load_checkpoint()
    assert round_index == 7 and record == {"round": 7, "n_updates": 2}
    np.testing.assert_array_equal(loaded["w.x"], state["w.x"])


def test_reconcile_keeps_one_line_per_completed_round(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    lines = [{"round": 1}, {"round": 2}, {"round": 2}, {"round": 3}]
    store.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"round": 4, "tor')
    store.reconcile_metrics(2, {"round": 2, "n_updates": 3})
    assert [m["round"] for m in store.read_metrics()] == [1, 2]
    # the checkpoint of round 3 exists but its metrics line was lost: it is written from the checkpoint
    store.reconcile_metrics(3, {"round": 3, "n_updates": 3})
    assert store.read_metrics()[-1] == {"round": 3, "n_updates": 3, "resumed": True}


def test_a_state_dir_with_a_run_needs_resume_and_a_fitting_model(tmp_path: Path) -> None:
    server = raw.start(tmp_path)
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub).session
    task = raw.wait_task(stub, session)
    raw.answer(stub, session, task)
    assert server.wait(timeout=30)
    channel.close()
    server.shutdown(grace_s=0.2)
    config = raw.small_config()
    with pytest.raises(StateError, match="--resume"):
        server_app.build_loop(config, tmp_path / "state")
    with pytest.raises(StateError, match="does not fit"):
        server_app.build_loop(raw.small_config(**{"federation.algorithm": "scaffold"}), tmp_path / "state", resume=True)
    resumed = server_app.build_loop(config, tmp_path / "state", resume=True)
    try:
        assert resumed.front.completed_round == 1 and len(resumed.registry.clients) == 1
        np.testing.assert_array_equal(resumed.front.state["w.head.bias"], server.coordinator.state["w.head.bias"])
    finally:
        resumed.close()


def test_resume_keeps_the_saved_config_and_applies_explicit_flags(tmp_path: Path) -> None:
    StateStore(tmp_path).save_config(raw.small_config(**{"federation.rounds": 5, "federation.seed": 9}).to_json())
    config = server_app.run_config_for(tmp_path, None, {"federation.rounds": 8, "federation.seed": None}, resume=True)
    assert config.federation.rounds == 8 and config.federation.seed == 9
    with pytest.raises(Exception, match="drop --config"):
        server_app.run_config_for(tmp_path, tmp_path / "run.toml", {}, resume=True)


def test_a_full_disk_is_refused_at_start(tmp_path: Path, monkeypatch) -> None:
    class Usage:
        free = 1 << 20

    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(StateError, match="MiB free"):
        StateStore(tmp_path, checkpoint_bytes=4 << 20)


def test_an_unwritable_state_dir_is_one_line_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = subprocess.run([sys.executable, "-m", "fedser_server.cli", "serve", "--insecure", "--address", "127.0.0.1:0",
                             "--state-dir", str(blocker / "state")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "not writable" in errors[0], result.stderr


def test_clients_registered_from_many_threads_at_once_are_all_on_disk(tmp_path: Path) -> None:
    # joins that arrive together share one transaction; each returns only once its row is written
    import threading

    from fedser_server.state.registry import ClientRecord, Registry

    registry = Registry(tmp_path / "registry.sqlite")

    def join_many(worker: int) -> None:
        for i in range(25):
            registry.save(ClientRecord(f"id{worker}-{i}", f"client{worker}-{i}", [1, 2, 3, 4], 0, 0, "emobase", 988, 0.0, 0.0))

    threads = [threading.Thread(target=join_many, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    left = registry.by_name("client3-7")
    assert left is not None
    left.left, left.participations = True, 2
    registry.save_many([left])
    registry.close()
    reopened = Registry(tmp_path / "registry.sqlite")
    assert len(reopened.clients) == 8 * 25
    assert reopened.by_name("client3-7").left and reopened.by_name("client3-7").participations == 2
    reopened.close()
