"""`fedser-server status`: a run at a glance, from its state dir."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from fedser_server.observability.snapshot import RunSnapshot

_ROUND_COLUMNS = {"n_sampled": "sampled", "n_updates": "updates", "train_loss": "train loss", "lr": "lr",
                  "attempts": "tries", "seconds": "seconds", "uar": "UAR", "eval_loss": "eval loss",
                  "n_eval_clients": "eval clients", "tau": "tau"}


def _when(unix_s: float | None, now: float) -> str:
    if unix_s is None:
        return "-"
    stamp = datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({_ago(now - unix_s)})"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def class_label(index: int, class_names: Sequence[str] | None) -> str:
    return class_names[index] if class_names and index < len(class_names) else f"class {index}"


def summary(snapshot: RunSnapshot, class_names: Sequence[str] | None = None, now: float | None = None) -> dict[str, Any]:
    """Everything `status` shows, as plain values (what `status --json` prints)."""
    now = time.time() if now is None else now
    last, best = snapshot.last, snapshot.best
    evaluations = snapshot.evaluations
    refused: dict[str, int] = {}
    for record in snapshot.records:
        for reason, count in (record.get("refused") or {}).items():
            refused[reason] = refused.get(reason, 0) + count
    out: dict[str, Any] = {
        "state_dir": str(snapshot.state_dir),
        "address": snapshot.address,
        "completed_round": snapshot.completed_round,
        "rounds_logged": len(snapshot.records),
        "updated_at": snapshot.updated_at,
        "updates_accepted": sum(int(r.get("n_updates", 0)) for r in snapshot.records),
        "updates_refused": refused,
        "last_round": {k: v for k, v in last.items() if k != "confusion"} if last else None,
        "last_uar": {"round": evaluations[-1]["round"], "uar": evaluations[-1]["uar"]} if evaluations else None,
        "best_uar": {"round": best["round"], "uar": best["uar"]} if best else None,
        "clients": [
            {"name": c.name, "client_id": c.client_id, "participations": c.participations, "left": c.left,
             "joined_at": c.joined_at, "last_seen": c.last_seen, "last_seen_s_ago": round(now - c.last_seen, 1),
             "n_labeled": c.n_labeled, "n_unlabeled": c.n_unlabeled, "n_eval": c.n_eval}
            for c in snapshot.clients
        ],
    }
    released = [r for r in snapshot.records if "dp_epsilon" in r]
    if released:  # privacy.dp: what the rounds released so far spent (epsilon null: no noise, no guarantee)
        last_dp = released[-1]
        out["privacy"] = {"epsilon": last_dp["dp_epsilon"], "delta": last_dp.get("dp_delta"), "round": last_dp["round"],
                          "noise_multiplier": last_dp.get("dp_noise_multiplier"), "clip_norm": last_dp.get("dp_clip_norm"),
                          "q": last_dp.get("dp_q"), "epsilon_budget": snapshot.epsilon_budget}
    if snapshot.stop_reason:
        out["stopped"] = snapshot.stop_reason
    if evaluations:
        recalls = evaluations[-1].get("per_class_recall") or []
        out["last_per_class_recall"] = {class_label(i, class_names): r for i, r in enumerate(recalls)}
    if snapshot.semi:
        taken = [sum(r.get("pseudo_taken") or []) for r in snapshot.records]
        correct = sum(sum(r.get("pseudo_correct") or []) for r in snapshot.records)
        per_class: dict[str, dict[str, int]] = {}
        for r in snapshot.records:  # where pseudo-labels go wrong: by the class they were given
            for i, (n, ok) in enumerate(zip(r.get("pseudo_taken") or [], r.get("pseudo_correct") or [])):
                entry = per_class.setdefault(class_label(i, class_names), {"taken": 0, "correct": 0})
                entry["taken"] += int(n)
                entry["correct"] += int(ok)
        out["pseudo_labels"] = {"taken": sum(taken), "correct": correct,
                                "with_truth": sum(int(r.get("pseudo_with_truth", 0)) for r in snapshot.records),
                                "tau": last.get("tau") if last else None, "per_class": per_class}
    return out


def privacy_line(privacy: dict[str, Any]) -> str:
    """Epsilon spent so far, in one line: 'epsilon 1.23 at delta 1e-05 after round 3 (budget 8)'."""
    spent = "infinite (no noise)" if privacy["epsilon"] is None else f"{privacy['epsilon']:.4g}"
    budget = f" (budget {privacy['epsilon_budget']:g})" if privacy.get("epsilon_budget") is not None else ""
    return f"epsilon {spent} at delta {privacy['delta']:g} after round {privacy['round']}{budget}"


def render(snapshot: RunSnapshot, console: Console, class_names: Sequence[str] | None = None, now: float | None = None) -> None:
    now = time.time() if now is None else now
    info = summary(snapshot, class_names, now)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("state dir", info["state_dir"])
    head.add_row("address", info["address"] or "-")
    head.add_row("completed round", str(info["completed_round"]))
    head.add_row("last write", _when(info["updated_at"], now))
    head.add_row("updates", f"{info['updates_accepted']} accepted"
                 + (", refused " + ", ".join(f"{k} {v}" for k, v in sorted(info["updates_refused"].items()))
                    if info["updates_refused"] else ", none refused"))
    if info["last_uar"]:
        head.add_row("last UAR", f"{info['last_uar']['uar']:.4f} (round {info['last_uar']['round']})")
        head.add_row("best UAR", f"{info['best_uar']['uar']:.4f} (round {info['best_uar']['round']})")
    else:
        head.add_row("UAR", "no evaluation yet")
    if "privacy" in info:
        head.add_row("privacy", privacy_line(info["privacy"]))
    if "stopped" in info:
        head.add_row("stopped", info["stopped"])
    if "pseudo_labels" in info:
        pl = info["pseudo_labels"]
        checked = f", {pl['correct']} of {pl['with_truth']} checkable right" if pl["with_truth"] else ""
        head.add_row("pseudo-labels", f"{pl['taken']} taken{checked}; tau now {_num(pl['tau'], 3)}")
    parts: list[Any] = [head]

    last = info["last_round"]
    if last:
        table = Table(title=f"last round: {last['round']}", title_justify="left", expand=False)
        keys = [k for k in _ROUND_COLUMNS if k in last]
        for key in keys:
            table.add_column(_ROUND_COLUMNS[key], justify="right")
        table.add_row(*(_num(last[k]) for k in keys))
        parts.append(table)
    if info.get("last_per_class_recall"):
        recall = Table(title="recall per class (last evaluation)", title_justify="left")
        for name in info["last_per_class_recall"]:
            recall.add_column(name, justify="right")
        recall.add_row(*(_num(v) for v in info["last_per_class_recall"].values()))
        parts.append(recall)

    if not info["clients"]:
        parts.append("clients: none registered in this state dir")
        console.print(Panel(Group(*parts), title="fedser run", title_align="left", expand=False))
        return
    clients = Table(title=f"clients ({len(info['clients'])} registered)", title_justify="left")
    for column, justify in (("name", "left"), ("client id", "left"), ("rounds", "right"), ("labeled", "right"),
                            ("unlabeled", "right"), ("eval", "right"), ("last seen", "left"), ("state", "left")):
        clients.add_column(column, justify=justify)  # type: ignore[arg-type]
    for c in info["clients"]:
        clients.add_row(c["name"], c["client_id"], str(c["participations"]), str(c["n_labeled"]), str(c["n_unlabeled"]),
                        str(c["n_eval"]), _when(c["last_seen"], now), "left" if c["left"] else "joined")
    parts.append(clients)
    console.print(Panel(Group(*parts), title="fedser run", title_align="left", expand=False))
