"""Command-line start-up: wall time of the operator commands, against `python -c pass` in the same run.

Each command runs as its own process, the way an operator (or a probe every few seconds) runs
it; the commands take turns, so a burst of load on the shared machine touches all of them alike.
The figures are medians of the runs; the ratio is of wall times, to `python -c pass`'s. CPU time
(user + system) is shown too: load from other work on a shared machine inflates it less than wall time.

    python benchmarks/startup.py            # 7 runs of each command
    python benchmarks/startup.py --quick    # 2 runs of each (a smoke test)
    git archive OLD | tar -x -C /tmp/old && python benchmarks/startup.py --before /tmp/old
                                            # also OLD's commands, in the same turns: a "before" column
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, free_port, headline, machine_facts, markdown_table, write_results  # noqa: E402

BASELINE = "python -c pass"


MODULES = {"fedser-server": "fedser_server.cli", "fedser-client": "fedser_client.cli", "fedser-sim": "fedser_sim.cli"}


def script(name: str, source: Path | None = None) -> list[str]:
    """The installed console script; or, with `source`, what that script does with the code of that source tree."""
    installed = Path(sys.executable).parent / name
    if source is None and installed.exists():
        return [str(installed)]
    # sys.path goes before the installed package's import hook, so the tree's code is what runs
    paths = [str(source), str(source / "shared")] if source is not None else []
    return [sys.executable, "-c", f"import sys; sys.path[:0] = {paths!r}; from {MODULES[name]} import main; sys.exit(main())"]


def make_state_dir(path: Path) -> Path:
    """A small state dir, as a server leaves it after 3 rounds with 2 clients, for `status` to read."""
    from fedser_server.state.registry import ClientRecord, Registry

    path.mkdir(parents=True, exist_ok=True)
    now = time.time()
    records = [{"round": r, "train_loss": 1.0 / r, "n_updates": 2, "uar": 0.25 + 0.05 * r} for r in (1, 2, 3)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (path / "progress.json").write_text(json.dumps({"completed_round": 3}), encoding="utf-8")
    registry = Registry(path / "registry.sqlite")
    try:
        registry.save_many([ClientRecord(f"id{i}", f"client{i}", [5, 5, 5, 5], 10, 8, "emobase", 988, now - 60, now, 3)
                            for i in range(2)])
    finally:
        registry.close()
    return path


def commands(work: Path, source: Path | None = None) -> dict[str, list[str]]:
    """What each timed command runs; the labels are what the table shows."""
    server, client, sim = (script(name, source) for name in MODULES)
    state = make_state_dir(work / "state")
    return {
        BASELINE: [sys.executable, "-c", "pass"],
        "fedser-server --help": [*server, "--help"],
        "fedser-client --help": [*client, "--help"],
        "fedser-sim --help": [*sim, "--help"],
        "fedser-server status --state-dir D": [*server, "status", "--state-dir", str(state)],
        "fedser-server token add NAME --state-dir D": [*server, "token", "add", "{name}", "--state-dir", str(work / "tokens")],
        "fedser-server certs dev --out D": [*server, "certs", "dev", "--out", str(work / "certs" / "{run}")],
        "fedser-server config --print-default": [*server, "config", "--print-default"],
        "fedser-client config --print-default": [*client, "config", "--print-default"],
        "fedser-server probe --address 127.0.0.1:PORT": [*server, "probe", "--address", f"127.0.0.1:{free_port()}",
                                                          "--insecure", "--timeout", "2"],
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(argv: list[str], run: int, label: str) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system: what load on a shared machine inflates least)."""
    argv = [a.replace("{run}", str(run)).replace("{name}", f"bench{run + 1}") for a in argv]
    cpu_before, started = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    elapsed, cpu = time.perf_counter() - started, _children_cpu_s() - cpu_before
    # probe answers "unhealthy" (exit 1) when nothing listens, which is what it is asked here
    expected = (0, 1) if "probe" in label else (0,)
    if proc.returncode not in expected:
        raise RuntimeError(f"{label} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return elapsed, cpu


Medians = dict[str, tuple[float, float]]  # label -> (median wall s, median CPU s)


def measure(sets: list[dict[str, list[str]]], runs: int) -> list[Medians]:
    """Each set's commands' medians; every command of every set runs once per turn."""
    times: list[dict[str, list[tuple[float, float]]]] = [{label: [] for label in cmds} for cmds in sets]
    for cmds in sets:
        for label, argv in cmds.items():  # one untimed run each: the page cache warms, .pyc files get written
            time_once(argv, -1, label)
    for run in range(runs):
        for label in sets[0]:
            for cmds, kept in zip(sets, times):
                kept[label].append(time_once(cmds[label], run, label))
    return [{label: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
             for label, values in kept.items()} for kept in times]


def table(medians: Medians, before: Medians | None = None) -> str:
    base = medians[BASELINE][0]
    header = ["command", "median wall s", f"x `{BASELINE}`", "median CPU s"]
    rows = [[f"`{label}`", f"{wall:.3f}", f"{wall / base:.1f}", f"{cpu:.3f}"] for label, (wall, cpu) in medians.items()]
    if before is not None:
        header += ["before: wall s", f"before: x `{BASELINE}`", "before: CPU s"]
        for row, (wall, cpu) in zip(rows, before.values()):
            row += [f"{wall:.3f}", f"{wall / before[BASELINE][0]:.1f}", f"{cpu:.3f}"]
    return markdown_table(header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of each command (a smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs of each command (default 7, 2 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--before", type=Path, default=None,
                        help="an earlier fedser source tree (git archive REV | tar -x -C DIR): its commands are timed in the same turns")
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else (2 if args.quick else 7)
    if runs < 1:
        print("startup.py: error: --runs must be at least 1", file=sys.stderr)
        return 2
    if args.before is not None and not (args.before / "fedser_server" / "cli.py").is_file():
        print(f"startup.py: error: --before {args.before} is not a fedser source tree (no fedser_server/cli.py)", file=sys.stderr)
        return 2

    facts = machine_facts()
    with tempfile.TemporaryDirectory(prefix="fedser-startup-") as tmp:
        sets = [commands(Path(tmp) / "now")] + ([commands(Path(tmp) / "before", args.before)] if args.before else [])
        try:
            medians, *before = measure(sets, runs)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"startup.py: error: {exc}", file=sys.stderr)
            return 1
    facts["runs per command"] = f"{runs} (after one untimed run each), taking turns"
    facts["target"] = "each command under 0.5 s wall on a quiet 2-core machine"
    if args.before is not None:
        facts["before"] = f"the source tree in {args.before}, run through the same Python"
    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    body = table(medians, before[0] if before else None)
    print(body)
    path = write_results("startup", "Command-line start-up", command_line(), facts, body, args.out)
    print(f"wrote {path}")
    headline("slowest_cli_s", max(wall for label, (wall, _) in medians.items() if label != BASELINE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
