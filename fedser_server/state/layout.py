"""The server state dir: what each file is called, and the one reader of `metrics.jsonl`.

    global.safetensors   weights + control variate + the round they belong to (the checkpoint)
    registry.sqlite      the clients
    metrics.jsonl        one JSON line per completed round
    run_config.json      the run's validated configuration, saved at its start
    address              HOST:PORT the server listens on
    progress.json        the completed round, for runs driven by fedser-sim's inprocess engine
    privacy_plan.json    privacy.dp: the noise multiplier and sampling rate fixed at round 1 (resume spends on from it)
    stopped              why the run ended before its last round (a privacy budget), one line
    incoming/            updates being received (unnamed files: nothing to clean up)
    scratch/             a large model's served state and running sums (unnamed files: nothing to clean up)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedser_shared.errors import StateError

GLOBAL_FILE = "global.safetensors"
REGISTRY_FILE = "registry.sqlite"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "run_config.json"
ADDRESS_FILE = "address"
PROGRESS_FILE = "progress.json"
SIM_CONFIG_FILE = "run.toml"
PRIVACY_PLAN_FILE = "privacy_plan.json"
STOPPED_FILE = "stopped"
INCOMING_DIR = "incoming"
SCRATCH_DIR = "scratch"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, oldest first. One policy for a bad line: the last line may be
    cut short (a crash, or a line being appended right now) and is left out; any other line that is
    not a JSON object with an integer 'round' is a StateError naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read {path}: {exc}") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    records = []
    for index, (number, line) in enumerate(numbered):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if index == len(numbered) - 1:
                break
            raise StateError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("round"), int):
            raise StateError(f"{path}:{number}: a metrics line needs an integer 'round'")
        records.append(record)
    return records


def read_stop_reason(state_dir: Path) -> str | None:
    """Why the run in `state_dir` ended before its last round (a privacy budget), or None."""
    try:
        return (state_dir / STOPPED_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read {state_dir / STOPPED_FILE}: {exc}") from None
