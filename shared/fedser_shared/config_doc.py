"""Documentation rendered from the config classes: commented TOML files and docs/config.md.

Descriptions, types, defaults and bounds are read from `RunConfig` itself, so the
printed defaults and the docs cannot drift from what `load_run_config` accepts.
"""

from __future__ import annotations

import json
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedser_shared.config import RunConfig, _toml_value

# What a client reads from its own file before it joins; everything else it takes from the server.
CLIENT_FIELDS: tuple[str, ...] = ("features", "labels", "train.eval_fraction", "semi.enabled", "federation.seed")

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_BOUNDS = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"), (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"))

SERVER_HEADER = """\
fedser server configuration: `fedser-server serve --config server.toml`.
Every field is shown with its default; keep only the ones you change.
Flags of `serve` (--rounds, --min-clients, --fraction, ...) override this file.
The server sends the whole configuration to each client when it joins."""

CLIENT_HEADER = """\
fedser client configuration: `fedser-client join --config client.toml`.
These fields say how the client reads and splits its data before it joins; training settings
come from the server at join time. features and labels must match the server's."""


@dataclass(frozen=True)
class FieldDoc:
    section: str
    name: str
    kind: str
    default: Any
    bounds: str
    description: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def _kind(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_kind(a) for a in inner) + (" (optional)" if len(inner) < len(args) else "")
    if origin is list:
        return f"list of {_kind(args[0])}s"
    if origin is tuple:
        return "pair of " + _kind(args[0]) if len(args) == 2 and args[0] == args[1] else "tuple"
    if origin is dict:
        return f"table of {_kind(args[0])} → {_kind(args[1])}"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for cls, attr, sign in _BOUNDS:
            if isinstance(item, cls):
                parts.append(f"{sign} {getattr(item, attr)}")
        if isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} item" + ("s" if item.min_length != 1 else ""))
    return ", ".join(parts)


def section_doc(section: str) -> str:
    model = RunConfig.model_fields[section].annotation
    return (model.__doc__ or "").strip()


def field_docs(config: RunConfig | None = None) -> list[FieldDoc]:
    """Every field of every section, in declaration order, with `config`'s value as default."""
    config = config or RunConfig()
    values = config.model_dump(mode="json")
    docs = []
    for section, section_field in RunConfig.model_fields.items():
        model: type[BaseModel] = section_field.annotation  # type: ignore[assignment]
        for name, info in model.model_fields.items():
            docs.append(FieldDoc(section, name, _kind(info.annotation), values[section][name], _bounds(info),
                                 _sentence(info.description or "")))
    return docs


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _selected(doc: FieldDoc, selection: tuple[str, ...] | None) -> bool:
    return selection is None or doc.section in selection or doc.dotted in selection


def _comment(text: str) -> list[str]:
    return [f"# {line}" if line else "#" for line in textwrap.fill(text, 96).splitlines()] if text else []


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def documented_toml(header: str, selection: tuple[str, ...] | None = None, config: RunConfig | None = None) -> str:
    """A commented TOML file with every selected field at its value; `load_run_config` reads it back unchanged."""
    docs = [d for d in field_docs(config) if _selected(d, selection)]
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section in dict.fromkeys(d.section for d in docs):
        in_section = [d for d in docs if d.section == section]
        lines += ["", *_comment(section_doc(section)), f"[{section}]"]
        tables = [d for d in in_section if isinstance(d.default, dict)]
        for doc in [d for d in in_section if d not in tables]:
            note = doc.kind + (f", {doc.bounds}" if doc.bounds else "")
            lines += _comment(f"{doc.description} ({note})")
            if doc.default is None:
                lines.append(f"# {doc.name} = (unset)")
            else:
                lines.append(f"{doc.name} = {_toml_value(doc.default)}")
        for doc in tables:
            lines += ["", *_comment(f"{doc.description} ({doc.kind})"), f"[{section}.{doc.name}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.default.items()]
    return "\n".join(lines) + "\n"


def server_toml(config: RunConfig | None = None) -> str:
    return documented_toml(SERVER_HEADER, None, config)


def client_toml(config: RunConfig | None = None) -> str:
    return documented_toml(CLIENT_HEADER, CLIENT_FIELDS, config)


def _cell(value: Any) -> str:
    if value is None:
        return "unset"
    text = _toml_value(value)
    if isinstance(value, dict):
        text = ", ".join(f"{k} → {v}" for k, v in value.items())
    return f"`{text}`".replace("|", "\\|")


def config_markdown() -> str:
    """docs/config.md: one table per section, generated from the config classes."""
    client = {d.dotted for d in field_docs() if _selected(d, CLIENT_FIELDS)}
    out = [
        "<!-- generated by scripts/gen_config_docs.py from shared/fedser_shared/config.py: do not edit by hand -->",
        "# Configuration",
        "",
        "Server and clients read one TOML file each. Print a commented file with every field at its default:",
        "",
        "```bash",
        "fedser-server config --print-default > server.toml",
        "fedser-client config --print-default > client.toml",
        "```",
        "",
        "then start with `fedser-server serve --config server.toml ...` and `fedser-client join --config client.toml ...`.",
        "A file may hold only the fields it changes; the rest keep their defaults. The file is validated",
        "once, at start-up: an unknown field or a value out of range stops the command with one line",
        "naming the field, e.g. `invalid config server.toml: 'federation.fraction': Input should be less than or equal to 1`.",
        "",
        "The server's file holds every section. Flags of `serve` (`--rounds`, `--min-clients`, `--fraction`,",
        "`--algorithm`, `--eval-every`, `--seed`, `--client-timeout`, `--heartbeat-interval`) override it, also",
        "on `--resume`. The server sends the whole configuration to",
        "each client when it joins, so training settings are decided in one place. A client's own file only",
        "says how it reads and splits its data before it joins: the fields marked **client** below.",
        "`features` and `labels` must match the server's (the server refuses a client whose features differ).",
    ]
    for section in RunConfig.model_fields:
        out += ["", f"## `[{section}]`", "", section_doc(section), "",
                "| field | type | default | description |", "| --- | --- | --- | --- |"]
        for doc in (d for d in field_docs() if d.section == section):
            kind = doc.kind + (f"; {doc.bounds}" if doc.bounds else "")
            marker = " **client**" if doc.dotted in client else ""
            description = doc.description.replace("|", "\\|")
            out.append(f"| `{doc.name}`{marker} | {kind} | {_cell(doc.default)} | {description} |")
    return "\n".join(out) + "\n"
