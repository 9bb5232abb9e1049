"""The guides stay true: their links resolve and their commands use only subcommands and flags the CLIs have."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from fedser_client.cli import app as client_app
from fedser_server.cli import app as server_app

ROOT = Path(__file__).resolve().parents[2]
GUIDES = [ROOT / "README.md", ROOT / "docs" / "quickstart.md", ROOT / "docs" / "deploy.md", ROOT / "docs" / "config.md"]
APPS = {"fedser-server": server_app, "fedser-client": client_app}


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_links_resolve(guide: Path) -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", guide.read_text()):
        resolved = (guide.parent / target).resolve()
        # links that leave the repository (the workspace's shared design notes) are not part of a clone
        if "://" not in target and resolved.is_relative_to(ROOT):
            assert resolved.exists(), f"{guide.name} links to missing {target}"


def _command_lines(text: str) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    found = []
    for line in lines:
        for part in re.split(r"&&|\||;|&|\$\(", line.split(" #")[0]):
            words = shlex.split(part.replace(")", " "), posix=True) if part.strip() else []
            if words and words[0] in APPS:
                found.append(words)
    return found


def _resolve(words: list[str]):
    command = typer.main.get_command(APPS[words[0]])
    rest = words[1:]
    while rest and hasattr(command, "commands") and rest[0] in command.commands:  # type: ignore[attr-defined]
        command, rest = command.commands[rest[0]], rest[1:]  # type: ignore[attr-defined]
    return command, rest


@pytest.mark.parametrize("guide", GUIDES[:3], ids=lambda p: p.name)
def test_commands_in_guides_exist(guide: Path) -> None:
    commands = _command_lines(guide.read_text())
    for words in commands:
        command, rest = _resolve(words)
        assert not hasattr(command, "commands"), f"{guide.name}: '{' '.join(words[:3])}' names no subcommand"
        known = {opt for param in command.params for opt in param.opts}
        flags = {w.split("=", 1)[0] for w in rest if w.startswith("--")}
        assert flags <= known, f"{guide.name}: {' '.join(words[:2])} has no {sorted(flags - known)}"


def test_the_quickstart_covers_both_tls_machines() -> None:
    commands = [" ".join(w[:3]) for w in _command_lines((ROOT / "docs" / "quickstart.md").read_text())]
    for expected in ("fedser-server certs dev", "fedser-server token add", "fedser-server serve", "fedser-client join",
                     "fedser-server status", "fedser-server report"):
        assert any(c.startswith(expected) for c in commands), expected
