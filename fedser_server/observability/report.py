"""`fedser-server report`: PNG plots and a self-contained report.html from a state dir.

UAR (and recall per class) per evaluated round, training and evaluation loss per round,
and pseudo-labels taken per round and class when semi-supervised training was on.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedser_server.observability.snapshot import RunSnapshot
from fedser_server.observability.status import class_label, privacy_line, summary
from fedser_shared.errors import StateError
from fedser_shared.fsutil import atomic_write_bytes, atomic_write_text

_SIZE = (7.5, 4.0)
_DPI = 110


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    plots: list[Path]


def _png(figure: Figure) -> bytes:
    from io import BytesIO

    for axes in figure.axes:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["round"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [float(p[1]) for p in pairs]


def uar_figure(snapshot: RunSnapshot, class_names: Sequence[str] | None) -> Figure:
    figure = Figure(figsize=_SIZE)
    axes = figure.add_subplot()
    evaluations = snapshot.evaluations
    rounds, values = _series(evaluations, "uar")
    n_classes = max((len(r.get("per_class_recall") or []) for r in evaluations), default=0)
    for index in range(n_classes):
        pairs = [(r["round"], r["per_class_recall"][index]) for r in evaluations
                 if len(r.get("per_class_recall") or []) > index and r["per_class_recall"][index] is not None]
        axes.plot([p[0] for p in pairs], [p[1] for p in pairs], linewidth=1, alpha=0.6, label=class_label(index, class_names))
    axes.plot(rounds, values, color="black", linewidth=2.2, marker="o", markersize=3.5, label="UAR")
    best = snapshot.best
    if best is not None:
        axes.annotate(f"best {best['uar']:.3f} (round {best['round']})", (best["round"], best["uar"]),
                      textcoords="offset points", xytext=(0, 10), ha="center", fontsize=8)
    axes.set(title="UAR on the clients' evaluation splits", xlabel="round", ylabel="recall", ylim=(0, 1.05))
    axes.grid(alpha=0.3)
    if not rounds:
        axes.text(0.5, 0.5, "no evaluated round yet", transform=axes.transAxes, ha="center")
    else:
        axes.legend(fontsize=8, loc="lower right", ncols=2)
    return figure


def loss_figure(snapshot: RunSnapshot) -> Figure:
    figure = Figure(figsize=_SIZE)
    axes = figure.add_subplot()
    train_rounds, train = _series(snapshot.records, "train_loss")
    eval_rounds, evaluation = _series(snapshot.records, "eval_loss")
    axes.plot(train_rounds, train, linewidth=1.5, label="training loss (mean over updates)")
    if eval_rounds:
        axes.plot(eval_rounds, evaluation, marker="o", markersize=3.5, linewidth=1.5, label="evaluation loss")
    axes.set(title="Loss per round", xlabel="round", ylabel="loss")
    axes.grid(alpha=0.3)
    if train_rounds or eval_rounds:
        axes.legend(fontsize=8)
    else:
        axes.text(0.5, 0.5, "no loss reported yet", transform=axes.transAxes, ha="center")
    return figure


def pseudo_figure(snapshot: RunSnapshot, class_names: Sequence[str] | None) -> Figure:
    figure = Figure(figsize=_SIZE)
    axes = figure.add_subplot()
    records = [r for r in snapshot.records if "pseudo_taken" in r]
    rounds = [r["round"] for r in records]
    n_classes = max((len(r["pseudo_taken"]) for r in records), default=0)
    bottom = [0] * len(records)
    for index in range(n_classes):
        counts = [r["pseudo_taken"][index] if index < len(r["pseudo_taken"]) else 0 for r in records]
        axes.bar(rounds, counts, bottom=bottom, width=0.85, label=class_label(index, class_names))
        bottom = [b + c for b, c in zip(bottom, counts)]
    correct = [sum(r.get("pseudo_correct") or []) for r in records]
    if any(r.get("pseudo_with_truth") for r in records):
        axes.plot(rounds, correct, color="black", marker=".", linewidth=1, label="right (where truth is known)")
    twin = axes.twinx()
    tau_rounds, tau = _series(records, "tau")
    twin.plot(tau_rounds, tau, color="grey", linestyle="--", linewidth=1)
    twin.set_ylabel("confidence threshold tau (dashed)")
    twin.set_ylim(0, 1.05)
    axes.set(title="Pseudo-labels taken per round", xlabel="round", ylabel="pseudo-labels", ylim=(0, max(bottom + [1]) * 1.15))
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8, loc="upper left")
    return figure


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


_COLUMNS = ("round", "n_sampled", "n_updates", "train_loss", "lr", "attempts", "seconds", "uar", "eval_loss",
            "n_eval_clients", "tau", "pseudo_taken", "pseudo_correct", "refused", "dp_epsilon")

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}"""


def render_html(snapshot: RunSnapshot, plots: dict[str, bytes], class_names: Sequence[str] | None) -> str:
    info = summary(snapshot, class_names)
    facts = [["state dir", info["state_dir"]], ["completed round", str(info["completed_round"])],
             ["clients registered", str(len(info["clients"]))],
             ["updates", f"{info['updates_accepted']} accepted, refused: {_fmt(info['updates_refused']) or 'none'}"]]
    if info["best_uar"]:
        facts += [["last UAR", f"{info['last_uar']['uar']:.4f} (round {info['last_uar']['round']})"],
                  ["best UAR", f"{info['best_uar']['uar']:.4f} (round {info['best_uar']['round']})"]]
    if "privacy" in info:
        facts.append(["differential privacy", privacy_line(info["privacy"])])
    if "stopped" in info:
        facts.append(["stopped", info["stopped"]])
    if "pseudo_labels" in info:
        pl = info["pseudo_labels"]
        facts.append(["pseudo-labels", f"{pl['taken']} taken; {pl['correct']} of {pl['with_truth']} checkable right"])
        if pl["with_truth"] == pl["taken"] and pl["taken"]:  # every one checkable (a simulation): precision per class
            facts.append(["right, by the class given", ", ".join(
                f"{name} {c['correct']} of {c['taken']}" for name, c in pl["per_class"].items())])
    images = "".join(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                     for name, data in plots.items())
    if not snapshot.semi:
        images += "<p>Semi-supervised training was off in this run: no pseudo-labels to plot.</p>"
    columns = [c for c in _COLUMNS if any(c in r for r in snapshot.records)]
    rows = [[_fmt(r.get(c)) for c in columns] for r in snapshot.records]
    clients = [[c["name"], c["client_id"], str(c["participations"]), str(c["n_labeled"]), str(c["n_unlabeled"]),
                "left" if c["left"] else "joined"] for c in info["clients"]]
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>fedser report: {html.escape(info['state_dir'])}</title>"
            f"<style>{_STYLE}</style></head><body><h1>fedser run report</h1>"
            f"{_table(facts, ['', ''])}{images}"
            f"<h2>Clients</h2>{_table(clients, ['name', 'client id', 'rounds', 'labeled', 'unlabeled', 'state'])}"
            f"<h2>Rounds</h2>{_table(rows, columns)}"
            "<p>UAR is pooled over the clients' local evaluation splits (same speakers as training), "
            "not a cross-speaker test score.</p></body></html>\n")


def write_report(snapshot: RunSnapshot, out_dir: Path, class_names: Sequence[str] | None = None) -> ReportFiles:
    if not snapshot.records:
        raise StateError(f"{snapshot.state_dir} has no completed round in metrics.jsonl yet: nothing to plot")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create report dir {out_dir}: {exc.strerror or exc}") from None
    plots = {"uar.png": _png(uar_figure(snapshot, class_names)), "loss.png": _png(loss_figure(snapshot))}
    if snapshot.semi:
        plots["pseudo_labels.png"] = _png(pseudo_figure(snapshot, class_names))
    paths = []
    for name, data in plots.items():
        atomic_write_bytes(out_dir / name, data)
        paths.append(out_dir / name)
    page = out_dir / "report.html"
    atomic_write_text(page, render_html(snapshot, plots, class_names))
    return ReportFiles(page, paths)
