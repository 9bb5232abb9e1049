"""`fedser-server status` and `report` work from a state dir alone, e.g. one a `fedser-sim` run left."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fedser_server.cli import app
from fedser_server.observability.snapshot import load_snapshot
from fedser_shared.cli import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_writes_nonempty_html_and_plots(sim_state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert run_cli(app, "fedser-server", ["report", "--state-dir", str(sim_state_dir), "--out", str(out)]) == 0
    for name in ("uar.png", "loss.png", "pseudo_labels.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "best UAR" in page and "<td>3</td>" in page  # the summary and the row of round 3
    assert str(out / "report.html") in capsys.readouterr().out


def test_status_shows_round_uar_and_class_names(sim_state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(app, "fedser-server", ["status", "--state-dir", str(sim_state_dir)]) == 0
    text = capsys.readouterr().out
    assert "completed round" in text and "3" in text
    assert "best UAR" in text and "neutral" in text  # class names from the sim's run.toml


def test_status_json_matches_metrics_file(sim_state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(app, "fedser-server", ["status", "--state-dir", str(sim_state_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    records = [json.loads(line) for line in (sim_state_dir / "metrics.jsonl").read_text().splitlines()]
    assert info["completed_round"] == 3 == records[-1]["round"]
    assert info["updates_accepted"] == sum(r["n_updates"] for r in records)
    assert info["best_uar"]["uar"] == max(r["uar"] for r in records)
    assert info["pseudo_labels"]["tau"] == records[-1]["tau"]
    per_class = list(info["pseudo_labels"]["per_class"].values())
    assert [c["taken"] for c in per_class] == [sum(col) for col in zip(*(r["pseudo_taken"] for r in records))]
    assert [c["correct"] for c in per_class] == [sum(col) for col in zip(*(r["pseudo_correct"] for r in records))]


def _registry(path: Path, rows: list[tuple]) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE clients (client_id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, label_counts TEXT NOT NULL, "
               "n_unlabeled INTEGER NOT NULL, n_eval INTEGER NOT NULL, feature_name TEXT NOT NULL, feature_dim INTEGER NOT NULL, "
               "joined_at REAL NOT NULL, last_seen REAL NOT NULL, participations INTEGER NOT NULL DEFAULT 0, left INTEGER NOT NULL DEFAULT 0)")
    db.executemany("INSERT INTO clients VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def test_status_lists_clients_with_last_seen(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"round": 1, "n_sampled": 2, "n_updates": 2, "train_loss": 1.2,
                                                        "refused": {"invalid_argument": 1}}) + "\n")
    _registry(tmp_path / "registry.sqlite", [
        ("a1", "alice-box", "[3, 3, 3, 3]", 5, 4, "emobase", 988, 1.7e9, 1.7e9 + 60, 1, 0),
        ("b2", "bob-box", "[1, 0, 2, 0]", 0, 1, "emobase", 988, 1.7e9, 1.7e9 + 30, 1, 1)])
    snapshot = load_snapshot(tmp_path)
    assert [c.name for c in snapshot.clients] == ["alice-box", "bob-box"] and snapshot.clients[0].n_labeled == 12
    assert run_cli(app, "fedser-server", ["status", "--state-dir", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["updates_refused"] == {"invalid_argument": 1}
    assert [(c["name"], c["left"], c["last_seen"]) for c in info["clients"]] == [("alice-box", False, 1.7e9 + 60), ("bob-box", True, 1.7e9 + 30)]
    assert run_cli(app, "fedser-server", ["status", "--state-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "alice-box" in text and "left" in text and "invalid_argument 1" in text


def test_a_line_cut_short_by_a_crash_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"round": 1, "n_updates": 2}\n{"round": 2, "n_upd')
    assert [r["round"] for r in load_snapshot(tmp_path).records] == [1]


@pytest.mark.parametrize("command", ["status", "report"])
def test_bad_state_dirs_get_one_line(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(app, "fedser-server", [command, "--state-dir", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_cli(app, "fedser-server", [command, "--state-dir", str(tmp_path)]) == 2
    assert "is not a fedser state dir" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text('not json\n{"round": 1}\n')
    assert run_cli(app, "fedser-server", [command, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics.jsonl:1: not a JSON line" in err


def test_report_before_the_first_round_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "progress.json").write_text('{"completed_round": 0}')
    assert run_cli(app, "fedser-server", ["report", "--state-dir", str(tmp_path)]) == 2
    assert "no completed round" in capsys.readouterr().err


@pytest.mark.parametrize("label_counts", ["[3, 3", "{\"a\": 1}", "[\"x\"]"])
def test_a_malformed_registry_row_is_named_in_one_line(label_counts: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"round": 1, "n_sampled": 1, "n_updates": 1}) + "\n")
    _registry(tmp_path / "registry.sqlite", [
        ("a1", "alice-box", label_counts, 5, 4, "emobase", 988, 1.7e9, 1.7e9 + 60, 1, 0)])
    assert run_cli(app, "fedser-server", ["status", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "client 'a1'" in err and "malformed" in err and "Traceback" not in err
