"""Bad input on the command line: one line on stderr naming the problem, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_client_dir


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0], result.stderr


def test_server_with_malformed_config(tmp_path: Path) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text("[federation]\nfraction = 'half'\n")
    result = _run("fedser_server.cli", "serve", "--state-dir", str(tmp_path / "s"), "--config", str(bad), "--insecure",
                  "--address", "127.0.0.1:0")
    _assert_one_line_error(result, "'federation.fraction'")


def test_server_admission_limits_and_client_timeout_are_checked_with_the_config(tmp_path: Path) -> None:
    bad = tmp_path / "run.toml"
    bad.write_text("[admission]\nuploads = 0\n")
    result = _run("fedser_server.cli", "serve", "--state-dir", str(tmp_path / "s"), "--config", str(bad), "--insecure",
                  "--address", "127.0.0.1:0")
    _assert_one_line_error(result, "'admission.uploads'")
    result = _run("fedser_server.cli", "serve", "--state-dir", str(tmp_path / "s"), "--client-timeout", "0", "--insecure",
                  "--address", "127.0.0.1:0")
    _assert_one_line_error(result, "'server.client_timeout_s'")


def test_server_without_tls_or_insecure_explains_the_choice(tmp_path: Path) -> None:
    result = _run("fedser_server.cli", "serve", "--state-dir", str(tmp_path / "s"), "--address", "127.0.0.1:0")
    _assert_one_line_error(result, "--insecure")


def test_client_with_missing_data_dir(tmp_path: Path) -> None:
    result = _run("fedser_client.cli", "join", "--server", "127.0.0.1:1", "--data-dir", str(tmp_path / "nope"), "--insecure")
    _assert_one_line_error(result, "does not exist")


def test_client_with_empty_labels_csv(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=1)
    (folder / "labels.csv").write_text("")
    result = _run("fedser_client.cli", "join", "--server", "127.0.0.1:1", "--data-dir", str(folder), "--insecure")
    _assert_one_line_error(result, "labels.csv")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_client_with_unreadable_data_dir(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        # root reads any directory; a path that is a file is the unreadable case we can build here
        target = tmp_path / "not-a-dir"
        target.write_text("x")
    else:
        target = tmp_path / "locked"
        target.mkdir()
        target.chmod(0)
    result = _run("fedser_client.cli", "join", "--server", "127.0.0.1:1", "--data-dir", str(target), "--insecure")
    _assert_one_line_error(result, str(target))


def test_sim_with_a_corpus_without_manifest(tmp_path: Path) -> None:
    result = _run("fedser_sim.cli", "--corpus", str(tmp_path), "--out", str(tmp_path / "run"), "--clients", "2", "--rounds", "1")
    _assert_one_line_error(result, "manifest.csv")
