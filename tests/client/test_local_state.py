"""A client's c_i and pseudo-label pool live in `.fedser/`, written atomically, and survive a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import structlog
from safetensors.numpy import save

from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.state import LocalState
from fedser_client.core.trainer import LocalTrainer, TrainTask
from fedser_client.local_store import LocalStore
from fedser_shared import fsutil
from fedser_shared.config import load_run_config
from fedser_shared.errors import StateError
from fedser_shared.model import build_model, weights_of

PATHS = [f"audio/clip_{i}.wav" for i in range(6)]


def a_state(seed: int, participations: int) -> LocalState:
    rng = np.random.default_rng(seed)
    control = {"c.hidden.0.weight": rng.normal(size=(3, 2)).astype(np.float32), "c.head.bias": rng.normal(size=4).astype(np.float32)}
    return LocalState(control=control, pseudo_index=np.array([4, 1]), pseudo_label=np.array([2, 0]), participations=participations)


def assert_same(loaded: LocalState, saved: LocalState) -> None:
    assert set(loaded.control) == set(saved.control)
    for name, value in saved.control.items():
        np.testing.assert_array_equal(loaded.control[name], value)
    assert sorted(zip(loaded.pseudo_index.tolist(), loaded.pseudo_label.tolist())) == sorted(
        zip(saved.pseudo_index.tolist(), saved.pseudo_label.tolist()))
    assert loaded.participations == saved.participations


def test_state_written_by_one_process_is_read_back_by_the_next(tmp_path: Path) -> None:
    saved = a_state(0, participations=3)
    LocalStore(tmp_path).save_state(saved, PATHS)
    assert_same(LocalStore(tmp_path).load_state(PATHS), saved)  # a new store: the restarted client


def test_a_fresh_client_starts_with_no_control_variate(tmp_path: Path) -> None:
    state = LocalStore(tmp_path).load_state(PATHS)
    assert state.control == {} and state.participations == 0 and len(state.pseudo_index) == 0


def test_a_crash_while_writing_keeps_the_previous_c_i_and_leaves_no_debris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    old = a_state(0, participations=1)
    store.save_state(old, PATHS)

    def crash(*_args: object) -> None:
        raise OSError("power lost before the rename")

    monkeypatch.setattr(fsutil.os, "replace", crash)
    with pytest.raises(OSError):
        store.save_state(a_state(1, participations=2), PATHS)
    monkeypatch.undo()
    assert_same(LocalStore(tmp_path).load_state(PATHS), old)
    assert not [p.name for p in store.dir.iterdir() if p.name.endswith(".tmp")]


def test_a_crash_at_any_point_of_a_save_leaves_c_i_and_its_participation_count_together(tmp_path: Path,
                                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """c_i and the count of participations that produced it are never read back from different rounds."""
    store = LocalStore(tmp_path)
    old, new = a_state(0, participations=1), a_state(1, participations=2)
    renames: list[object] = []
    real_replace = fsutil.os.replace
    monkeypatch.setattr(fsutil.os, "replace", lambda *args: (renames.append(args), real_replace(*args)))
    store.save_state(old, PATHS)
    for crash_at in range(len(renames)):  # a crash before each rename the save makes
        store.save_state(old, PATHS)
        calls = iter(range(len(renames)))

        def replace(*args: object, _at: int = crash_at, _calls=calls) -> None:
            if next(_calls) == _at:
                raise OSError("power lost")
            real_replace(*args)

        monkeypatch.setattr(fsutil.os, "replace", replace)
        with pytest.raises(OSError):
            store.save_state(new, PATHS)
        monkeypatch.setattr(fsutil.os, "replace", real_replace)
        loaded = LocalStore(tmp_path).load_state(PATHS)
        assert_same(loaded, old if loaded.participations == 1 else new)


def test_a_data_dir_of_the_two_file_layout_keeps_its_c_i_and_moves_to_one_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    saved = a_state(0, participations=4)
    fsutil.atomic_write_bytes(store.dir / "control.safetensors", save(saved.control))
    pool = {PATHS[int(i)]: int(label) for i, label in zip(saved.pseudo_index, saved.pseudo_label)}
    fsutil.atomic_write_text(store.dir / "local_state.json", json.dumps({"participations": 4, "pseudo_labels": pool}))
    assert_same(store.load_state(PATHS), saved)
    store.save_state(a_state(1, participations=5), PATHS)
    assert sorted(p.name for p in store.dir.iterdir()) == ["local_state.safetensors"]
    assert LocalStore(tmp_path).load_state(PATHS).participations == 5


def _flip_bit(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def _nan_in_first_tensor(path: Path) -> None:
    """What the reported fault wrote: c_i with a NaN, in a file whose header is intact."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:start + 4] = np.array([np.nan], np.float32).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: _flip_bit(p, 5), id="finite-bit-flip"),
    pytest.param(_nan_in_first_tensor, id="nan"),
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-9]), id="truncated"),
    pytest.param(lambda p: p.write_bytes(b"not a safetensors file"), id="garbage"),
])
def test_a_corrupt_c_i_is_set_aside_by_name_and_the_client_restarts_it_at_zero(tmp_path: Path, damage, capsys) -> None:
    """A damaged c_i is never trained on (a NaN would get every update refused, a flipped bit would
    be used silently): the file is kept as .corrupt, a warning names it, and c_i starts at zero."""
    structlog.reset_defaults()  # log to this test's stdout, whatever stream an earlier test configured
    store = LocalStore(tmp_path)
    store.save_state(a_state(0, participations=3), PATHS)
    damage(store.state_path)
    loaded = LocalStore(tmp_path).load_state(PATHS)
    assert loaded.control == {} and loaded.participations == 0 and len(loaded.pseudo_index) == 0
    assert not store.state_path.exists()
    assert (store.dir / "local_state.safetensors.corrupt").exists()
    out = capsys.readouterr().out
    assert "local_state_corrupt_restarting_at_zero" in out and str(store.state_path) in out
    # the next save is clean and read back as is
    store.save_state(a_state(1, participations=1), PATHS)
    assert_same(LocalStore(tmp_path).load_state(PATHS), a_state(1, participations=1))


def test_a_c_i_written_before_digests_is_still_read_but_a_nan_in_it_is_not(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    saved = a_state(0, participations=2)
    pool = {PATHS[int(i)]: int(label) for i, label in zip(saved.pseudo_index, saved.pseudo_label)}
    meta = {"meta": json.dumps({"participations": 2, "pseudo_labels": pool})}
    fsutil.atomic_write_bytes(store.state_path, save(saved.control, metadata=meta))  # the previous writer: no digest
    assert_same(store.load_state(PATHS), saved)
    poisoned = {**saved.control, "c.head.bias": np.array([0.0, np.nan, 0.0, 0.0], np.float32)}
    fsutil.atomic_write_bytes(store.state_path, save(poisoned, metadata=meta))
    assert store.load_state(PATHS).control == {}


def test_an_unreadable_state_dir_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / ".fedser").write_text("a file where the folder should be")
    with pytest.raises(StateError, match="cannot create"):
        LocalStore(tmp_path)


def test_training_resumes_after_a_restart_with_the_stored_c_i(tmp_path: Path) -> None:
    """Two participations with a restart in between equal two without one."""
    config = load_run_config(None, {"model.hidden": [8], "model.dropout": 0.0, "federation.algorithm": "scaffold"})
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, UNLABELED])
    data = ClientData(x, y, x[:2], np.array([0, 1]))
    theta = weights_of(build_model(5, 4, [8], 0.0, seed=0))
    state = {**theta, **{"c." + n[2:]: np.full_like(v, 0.01) for n, v in theta.items()}}
    task1, task2 = TrainTask(1, 0.1), TrainTask(2, 0.1)

    trainer = LocalTrainer(config, data, client_seed=7)
    _, after_first, _ = trainer.train(state, task1, LocalState())
    uninterrupted, _, _ = trainer.train(state, task2, after_first)

    LocalStore(tmp_path).save_state(after_first, PATHS)
    restarted = LocalTrainer(config, data, client_seed=7)
    resumed, resumed_state, _ = restarted.train(state, task2, LocalStore(tmp_path).load_state(PATHS))
    assert resumed_state.participations == 2
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value)
    assert any(np.abs(after_first.control[k]).max() > 0 for k in after_first.control)


def _identity(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_a_state_the_file_already_holds_is_not_written_again_and_a_changed_one_is(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    saved = a_state(0, participations=3)
    store.save_state(saved, PATHS)
    written = _identity(store.state_path)
    store.save_state(store.load_state(PATHS), PATHS)  # what a participation that changed nothing hands back
    store.save_state(a_state(0, participations=3), PATHS)  # equal values in other arrays
    assert _identity(store.state_path) == written
    changed = a_state(0, participations=4)
    store.save_state(changed, PATHS)
    assert _identity(store.state_path) != written
    assert_same(LocalStore(tmp_path).load_state(PATHS), changed)


def test_a_state_file_changed_behind_the_client_is_read_and_checked_again(tmp_path: Path, capsys) -> None:
    structlog.reset_defaults()
    store = LocalStore(tmp_path)
    store.save_state(a_state(0, participations=3), PATHS)
    assert store.load_state(PATHS).participations == 3
    replaced = a_state(1, participations=7)
    LocalStore(tmp_path).save_state(replaced, PATHS)  # another writer (a restored backup, say)
    assert_same(store.load_state(PATHS), replaced)
    _flip_bit(store.state_path, 5)  # damaged in place, same size
    loaded = store.load_state(PATHS)
    assert loaded.control == {} and loaded.participations == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "local_state_corrupt_restarting_at_zero" in line]
    assert len(lines) == 1 and str(store.state_path) in lines[0] and "checksum does not match" in lines[0]


def test_the_stored_c_i_cannot_be_changed_through_what_a_load_hands_out(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.save_state(a_state(0, participations=1), PATHS)
    control = store.load_state(PATHS).control
    with pytest.raises(ValueError, match="read-only"):
        control["c.head.bias"][0] = 1.0
    assert_same(store.load_state(PATHS), a_state(0, participations=1))
