"""A damaged state dir is named at start, never used: the checkpoint's digest, the registry's
integrity, a history without its checkpoint, and the debris of a write that a kill interrupted."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import structlog
from safetensors import safe_open
from safetensors.numpy import save

from fedser_server import app as server_app
from fedser_server.state.store import read_checkpoint
from fedser_shared.errors import StateError
from tests.faults import raw

ROUNDS = {"federation.rounds": 2}
VICTIM = "registry-victim"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The state dir of a finished two-round run with one client (made once, copied by each test)."""
    tmp = tmp_path_factory.mktemp("finished")
    server = raw.start(tmp, **ROUNDS)
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub, VICTIM).session
        for _ in range(2):
            raw.answer(stub, session, raw.wait_task(stub, session))
        assert server.wait(timeout=60)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
    with closing(sqlite3.connect(str(tmp / "state" / "registry.sqlite"))) as db:  # closed: no -wal file left
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return tmp / "state"


@pytest.fixture
def state_dir(finished_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "state"))


def _resume(state_dir: Path):  # noqa: ANN202 - a RoundLoop
    return server_app.build_loop(raw.small_config(**ROUNDS), state_dir, resume=True)


def _data_start(data: bytes | bytearray) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def _edit(path: Path, change: Callable[[bytearray], bytes | bytearray]) -> None:
    path.write_bytes(bytes(change(bytearray(path.read_bytes()))))


def _flip(data: bytearray, offset: int, bit: int = 0x01) -> bytearray:
    data[offset] ^= bit
    return data


def _nan_at_data_start(data: bytearray) -> bytearray:
    start = _data_start(data)
    data[start:start + 4] = np.array([np.nan], np.float32).tobytes()
    return data


def _round_digit_flipped(data: bytearray) -> bytearray:
    """'round': '2' becomes '3' (one bit): a header the safetensors parser takes without a complaint."""
    match = re.search(rb'"round":\s*"2"', bytes(data[:_data_start(data)]))
    assert match is not None
    return _flip(data, match.end() - 2)


CHECKPOINT_DAMAGE = {
    "nan-in-weights": _nan_at_data_start,
    "bit-flip-in-weights": lambda d: _flip(d, len(d) - 3, 0x10),
    "bit-flip-in-round-number": _round_digit_flipped,
    "corrupt-header": lambda d: _flip(d, 8, 0x40),  # '{' -> ';'
    "truncated": lambda d: d[: len(d) - 1000],
    "empty": lambda d: b"",
}


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
def test_a_damaged_checkpoint_is_named_at_resume_and_left_as_it_is(state_dir: Path, damage: str) -> None:
    checkpoint = state_dir / "global.safetensors"
    _edit(checkpoint, CHECKPOINT_DAMAGE[damage])
    damaged = checkpoint.read_bytes()
    with pytest.raises(StateError, match=re.escape(str(checkpoint))) as caught:
        _resume(state_dir).close()
    assert "\n" not in str(caught.value)
    assert checkpoint.read_bytes() == damaged  # nothing saved is lost: the operator decides


def test_a_checkpoint_written_before_digests_still_resumes(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()  # log to this test's stdout, whatever stream an earlier test configured
    checkpoint = state_dir / "global.safetensors"
    with safe_open(str(checkpoint), framework="numpy") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        metadata = {k: v for k, v in (handle.metadata() or {}).items() if k != "xxh3_128"}
    checkpoint.write_bytes(save(tensors, metadata=metadata))  # what the previous version wrote
    loop = _resume(state_dir)
    try:
        assert loop.front.completed_round == 2
        np.testing.assert_array_equal(loop.front.state["w.head.bias"], tensors["w.head.bias"])
    finally:
        loop.close()
    assert "checkpoint_without_digest" in capsys.readouterr().out
    # ... but a NaN in it is still refused
    _edit(checkpoint, _nan_at_data_start)
    with pytest.raises(StateError, match="NaN"):
        read_checkpoint(checkpoint)


def _registry_row_damaged(path: Path) -> None:
    """One flipped bit in the client's name inside the table's page: the unique index on names
    then misses the row (what SQLite's integrity check reported in the outside run)."""
    with closing(sqlite3.connect(str(path))) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='clients'").fetchone()[0]
    data = bytearray(path.read_bytes())
    page = (root - 1) * page_size
    at = data.find(VICTIM.encode(), page, page + page_size)
    assert at >= 0
    path.write_bytes(bytes(_flip(data, at + len(VICTIM) - 1, 0x02)))


def test_a_registry_that_fails_its_integrity_check_is_named_at_start(state_dir: Path) -> None:
    registry = state_dir / "registry.sqlite"
    _registry_row_damaged(registry)
    with pytest.raises(StateError, match=re.escape(str(registry)) + ".*missing from index"):
        _resume(state_dir).close()


def test_a_registry_row_with_malformed_fields_is_named_at_start(state_dir: Path) -> None:
    registry = state_dir / "registry.sqlite"
    with closing(sqlite3.connect(str(registry), isolation_level=None)) as db:
        db.execute("UPDATE clients SET label_counts='[5, 5' WHERE name=?", (VICTIM,))
    with pytest.raises(StateError, match=re.escape(str(registry)) + ".*label counts"):
        _resume(state_dir).close()


def test_a_registry_that_is_not_a_database_is_named_at_start(state_dir: Path) -> None:
    registry = state_dir / "registry.sqlite"
    registry.write_bytes(b"x" * 8192)
    with pytest.raises(StateError, match=re.escape(str(registry))):
        _resume(state_dir).close()


@pytest.mark.parametrize("resume", [True, False])
def test_a_history_without_its_checkpoint_is_refused_rather_than_restarted_at_round_1(state_dir: Path, resume: bool) -> None:
    (state_dir / "global.safetensors").unlink()
    metrics = (state_dir / "metrics.jsonl").read_text()
    with pytest.raises(StateError, match=r"global.safetensors is missing.*rounds 1-2"):
        server_app.build_loop(raw.small_config(**ROUNDS), state_dir, resume=resume).close()
    assert (state_dir / "metrics.jsonl").read_text() == metrics


def test_resume_before_the_first_checkpoint_starts_at_round_1(tmp_path: Path) -> None:
    """Killed before round 1 was saved: nothing on record, so there is nothing to contradict."""
    server_app.build_loop(raw.small_config(**ROUNDS), tmp_path / "state").close()
    loop = _resume(tmp_path / "state")
    try:
        assert loop.front.completed_round == 0
    finally:
        loop.close()


def test_the_temp_files_of_interrupted_writes_are_removed_at_start(state_dir: Path) -> None:
    leftovers = [state_dir / ".global.safetensors.k2j4l1.tmp", state_dir / ".global.safetensors.zz91ab.tmp",
                 state_dir / ".progress.json.a8c2.tmp"]
    for path in leftovers:
        path.write_bytes(b"\0" * 65536)
    foreign = state_dir / ".tokens.json.q1w2.tmp"  # `token add` may be writing it right now: not ours
    foreign.write_text("{}")
    _resume(state_dir).close()
    assert not any(path.exists() for path in leftovers)
    assert foreign.exists()


@pytest.mark.parametrize("problem", ["checkpoint", "registry", "missing-checkpoint"])
def test_serve_names_a_damaged_state_file_in_one_line_and_exits_2(state_dir: Path, problem: str) -> None:
    named = {"checkpoint": "global.safetensors", "registry": "registry.sqlite", "missing-checkpoint": "global.safetensors"}[problem]
    if problem == "checkpoint":
        _edit(state_dir / "global.safetensors", lambda d: _flip(d, len(d) - 3, 0x10))
    elif problem == "registry":
        _registry_row_damaged(state_dir / "registry.sqlite")
    else:
        (state_dir / "global.safetensors").unlink()
    result = subprocess.run([sys.executable, "-m", "fedser_server.cli", "serve", "--state-dir", str(state_dir), "--resume",
                             "--insecure", "--address", "127.0.0.1:0", "--log-level", "error"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(state_dir / named) in errors[0], result.stderr
