"""The documented TOML files and docs/config.md come from the config classes and stay in step."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedser_client.cli import app as client_app
from fedser_server.cli import app as server_app
from fedser_shared.cli import run_cli
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.config_doc import CLIENT_FIELDS, config_markdown, field_docs

ROOT = Path(__file__).resolve().parents[2]


def test_config_md_is_current() -> None:
    """Fails when a config field changed without `python scripts/gen_config_docs.py`."""
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == config_markdown(), \
        "docs/config.md is stale: run python scripts/gen_config_docs.py"


def test_the_generator_check_mode_agrees() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_field_is_described_and_documented() -> None:
    doc = config_markdown()
    for field in field_docs():
        assert field.description, f"{field.dotted} has no description in fedser_shared/config.py"
        assert f"| `{field.name}`" in doc


@pytest.mark.parametrize(("cli", "prog"), [(server_app, "fedser-server"), (client_app, "fedser-client")])
def test_print_default_reads_back_as_the_defaults(cli, prog: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(cli, prog, ["config", "--print-default"]) == 0
    text = capsys.readouterr().out
    path = tmp_path / "file.toml"
    path.write_text(text)
    assert load_run_config(path) == RunConfig()
    assert run_cli(cli, prog, ["config", "--check", str(path)]) == 0
    if prog == "fedser-client":
        tree = tomllib.loads(text)
        assert set(tree) == {f.split(".")[0] for f in CLIENT_FIELDS}
        assert set(tree["train"]) == {"eval_fraction"}
    else:
        for field in field_docs():
            # unset optional fields are shown commented out; tables as [section.name]
            assert f"{field.name} = " in text or f"[{field.dotted}]" in text, field.dotted


def test_check_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[federation]\nfraction = 2.0\nroundz = 3\n")
    assert run_cli(server_app, "fedser-server", ["config", "--check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'federation.fraction'" in err and "'federation.roundz': unknown field" in err and err.count("\n") == 1
    assert run_cli(client_app, "fedser-client", ["config"]) == 2
    assert "--print-default" in capsys.readouterr().err
