"""The error boundary every fedser CLI runs inside: typed errors become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from fedser_shared.errors import FedserError


def make_app(help_text: str) -> typer.Typer:
    # pretty exceptions off: typed errors are turned into one line by run_cli, not a traceback
    return typer.Typer(add_completion=False, no_args_is_help=True, help=help_text, pretty_exceptions_enable=False)


def run_cli(app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> int:
    try:
        app(args=argv, prog_name=prog_name)
    except FedserError as exc:
        print(f"{prog_name}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print(f"{prog_name}: interrupted", file=sys.stderr)
        return 130
    return 0


def entry_point(app: typer.Typer, prog_name: str) -> Callable[[], None]:
    def main() -> None:
        sys.exit(run_cli(app, prog_name))

    return main
