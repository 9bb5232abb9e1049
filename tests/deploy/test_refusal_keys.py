"""Every refusal key the server can send is in docs/protocol.md's table, with its status code."""

from __future__ import annotations

import re
from pathlib import Path

from fedser_server.transport.refusals import STATUS_OF

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _table() -> dict[str, set[str]]:
    """refusal key -> the status codes its table rows name."""
    rows: dict[str, set[str]] = {}
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            for key in re.findall(r"`([a-z_]+)`", cells[1]):
                rows.setdefault(key, set()).update(re.findall(r"`([A-Z_]+)`", cells[0]))
    return rows


def test_every_refusal_key_is_documented_with_its_status_code() -> None:
    table = _table()
    for error, code in STATUS_OF.items():
        assert error.reason in table, f"refusal key {error.reason!r} is missing from docs/protocol.md"
        assert code.name in table[error.reason], (error.reason, code.name, table[error.reason])
        for sub in error.__subclasses__():
            if sub not in STATUS_OF:
                assert sub.reason in table, f"refusal key {sub.reason!r} is missing from docs/protocol.md"
