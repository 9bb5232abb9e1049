"""The `config` command of both CLIs: print the documented default file, or check one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer

from fedser_shared.errors import ConfigError


def make_config_command(side: Literal["server", "client"]) -> Callable[..., None]:
    """`side` picks the documented default file: the server's (every field) or the client's (what it reads itself)."""
    def config(
        print_default: Annotated[bool, typer.Option("--print-default", help="print a commented TOML file with every field at its default")] = False,
        check: Annotated[Path | None, typer.Option("--check", help="validate a TOML file and say what is wrong with it")] = None,
    ) -> None:
        """Print the documented default configuration, or validate a configuration file."""
        if print_default == (check is not None):
            raise ConfigError("pass exactly one of --print-default or --check FILE")
        # the config classes load only when a file is printed or checked (not for --help)
        if print_default:
            from fedser_shared.config_doc import client_toml, server_toml

            typer.echo((server_toml if side == "server" else client_toml)(), nl=False)
            return
        from fedser_shared.config import load_run_config

        load_run_config(check)
        typer.echo(f"{check}: valid")

    return config
