"""What the researcher sees: a live round progress bar and the final UAR table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fedser_shared.config import RunConfig


def _fmt(value: object, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(config: RunConfig, metrics: list[dict], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("round", justify="right")
    table.add_column("updates", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column("UAR", justify="right", style="bold")
    for name in config.labels.class_names:
        table.add_column(f"recall {name}", justify="right")
    for record in metrics:
        if "uar" not in record:
            continue
        recalls = record.get("per_class_recall") or [None] * config.num_classes
        table.add_row(str(record["round"]), f"{record['n_updates']}/{record['n_sampled']}", _fmt(record.get("train_loss")),
                      _fmt(record.get("uar")), *(_fmt(r) for r in recalls))
    return table


def print_summary(console: Console, config: RunConfig, metrics: list[dict], wall_s: float, engine: str) -> None:
    console.print(results_table(config, metrics, f"fedser · {config.federation.algorithm} · {engine} engine"))
    evaluated = [m for m in metrics if m.get("uar") is not None]
    if evaluated:
        best = max(evaluated, key=lambda m: m["uar"])
        console.print(f"final UAR {evaluated[-1]['uar']:.3f} (round {evaluated[-1]['round']}), "
                      f"best {best['uar']:.3f} (round {best['round']}); {len(metrics)} rounds in {wall_s:.1f} s")
