"""What the researcher sees: a live round progress bar and the final UAR table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from fedser_shared.config import RunConfig


def _fmt(value: object, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(config: RunConfig, metrics: list[dict[str, Any]], title: str, held_out: dict[int, float] | None = None,
                  recalls: bool = True) -> Table:
    """One row per evaluated round: local-eval UAR, held-out-speaker UAR, pseudo-labels taken so far
    (and the share that was right), and, where there is room, the local recall of each class."""
    semi = config.semi.enabled
    table = Table(title=title, show_lines=False)
    table.add_column("round", justify="right")
    table.add_column("updates", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("local UAR", justify="right", style="bold")
    if held_out is not None:
        table.add_column("held-out UAR", justify="right", style="bold")
    private = any("dp_epsilon" in record for record in metrics)
    if private:
        table.add_column("ε spent", justify="right")
    if semi:
        table.add_column("pseudo-labels", justify="right")
        table.add_column("right", justify="right")
    for name in config.labels.class_names if recalls else []:
        table.add_column(f"recall {name}", justify="right")
    taken = correct = with_truth = 0
    for record in metrics:
        taken += sum(record.get("pseudo_taken") or [])
        correct += sum(record.get("pseudo_correct") or [])
        with_truth += record.get("pseudo_with_truth") or 0
        if "uar" not in record:
            continue
        class_recalls = record.get("per_class_recall") or [None] * config.num_classes
        cells = [str(record["round"]), f"{record['n_updates']}/{record['n_sampled']}", _fmt(record.get("train_loss")),
                 _fmt(record.get("uar"))]
        if held_out is not None:
            cells.append(_fmt(held_out.get(record["round"])))
        if private:
            cells.append(_fmt(record.get("dp_epsilon"), 2))
        if semi:
            cells += [str(taken), f"{100 * correct / with_truth:.0f}%" if with_truth else "—"]
        table.add_row(*cells, *((_fmt(r) for r in class_recalls) if recalls else ()))
    return table


def print_summary(console: Console, config: RunConfig, metrics: list[dict[str, Any]], wall_s: float, engine: str,
                  held_out: dict[int, float] | None = None, final: tuple[int, float] | None = None) -> None:
    method = f" + {config.semi.method}" if config.semi.enabled else ""
    title = f"fedser · {config.federation.algorithm}{method} · {engine} engine"
    console.print(results_table(config, metrics, title, held_out if final is not None else None,
                                recalls=console.width >= 120))
    evaluated = [m for m in metrics if m.get("uar") is not None]
    if metrics and "dp_epsilon" in metrics[-1]:
        last = metrics[-1]
        spent = "infinite (no noise)" if last["dp_epsilon"] is None else f"{last['dp_epsilon']:.3g}"
        console.print(f"differential privacy: epsilon {spent} at delta {last['dp_delta']:g} after "
                      f"{last['round']} rounds (noise multiplier {last['dp_noise_multiplier']:.3g}, clip norm "
                      f"{last['dp_clip_norm']:.3g}, sampling rate {last['dp_q']:.3g})")
    if evaluated:
        best = max(evaluated, key=lambda m: m["uar"])
        console.print(f"final local UAR {evaluated[-1]['uar']:.3f} (round {evaluated[-1]['round']}), "
                      f"best {best['uar']:.3f} (round {best['round']}); {len(metrics)} rounds in {wall_s:.1f} s")
    if final is not None:
        console.print(f"held-out speakers: UAR {final[1]:.3f} with the final global model (round {final[0]})")
    if config.semi.enabled and config.semi.method != "supervised":
        console.print(pseudo_label_line(config, metrics))


def pseudo_label_line(config: RunConfig, metrics: list[dict[str, Any]]) -> str:
    """Pseudo-labels taken over the run and their precision against the hidden labels, in all and per class
    (the class each was given): where they go wrong."""
    taken = [0] * config.num_classes
    correct = [0] * config.num_classes
    for record in metrics:
        for per_class, total in ((record.get("pseudo_taken"), taken), (record.get("pseudo_correct"), correct)):
            for c, n in enumerate(per_class or []):
                total[c] += int(n)
    with_truth = sum(int(r.get("pseudo_with_truth") or 0) for r in metrics)
    if not sum(taken):
        return "pseudo-labels: none taken"
    if not with_truth:
        return f"pseudo-labels: {sum(taken)} taken (no hidden labels to check them against)"
    per_class = ", ".join(f"{name} {100 * ok / n:.0f}% of {n}" if n else f"{name} none"
                          for name, ok, n in zip(config.labels.class_names, correct, taken))
    uses = " (rows x participations: FixMatch labels afresh every step)" if config.semi.method == "fixmatch" else ""
    return f"pseudo-labels: {sum(taken)} taken{uses}, {100 * sum(correct) / sum(taken):.0f}% right; by class: {per_class}"
