"""What a person sees while features are extracted: a live progress bar and a closing summary."""

from __future__ import annotations

import time
from collections import Counter
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fedser_client.data.labels import DataListing
from fedser_client.features.pipeline import ExtractionProgress, FeatureTable


class ExtractionBar:
    """A rich progress bar fed with `ExtractionProgress` snapshots: files, audio seconds, rate."""

    def __init__(self, console: Console, description: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[audio]}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console, transient=False)
        self._description = description
        self._task: TaskID | None = None
        self._started = time.perf_counter()

    def __enter__(self) -> ExtractionBar:
        self._progress.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._progress.__exit__(kind, error, trace)

    def __call__(self, state: ExtractionProgress) -> None:
        if self._task is None:
            self._task = self._progress.add_task(self._description, total=state.total, audio="", rate="")
        wall = max(time.perf_counter() - self._started, 1e-9)
        rate = f"{state.audio_seconds / wall:.1f}× real time" if state.audio_seconds else ""
        self._progress.update(self._task, completed=state.done, audio=f"{state.audio_seconds:,.0f} s audio", rate=rate)


def summary_table(listing: DataListing, table: FeatureTable, class_names: list[str]) -> Table:
    """Files found, labeled and unlabeled per class, extracted, from cache, skipped with reason."""
    found = Counter(f.label for f in listing.files)
    usable = Counter(int(label) for label in table.labels)
    summary = Table(title="feature extraction", show_header=True, title_justify="left")
    summary.add_column("files")
    summary.add_column("found", justify="right")
    summary.add_column("usable", justify="right")
    for cls, name in enumerate(class_names):
        summary.add_row(f"labeled {name}", str(found[cls]), str(usable[cls]))
    summary.add_row("unlabeled", str(found[None]), str(usable[-1]))
    summary.add_row("[bold]audio files", f"[bold]{len(listing.files)}", f"[bold]{len(table.paths)}")
    summary.add_section()
    summary.add_row("extracted now", "", str(table.extracted))
    summary.add_row("from cache", "", str(table.from_cache))
    if table.audio_seconds and table.wall_seconds:
        summary.add_row("audio extracted", "", f"{table.audio_seconds:,.1f} s ({table.audio_seconds / table.wall_seconds:.1f}× real time)")
    summary.add_row("skipped", "", str(len(table.failed)))
    for reason, count in Counter(table.failed.values()).most_common():
        summary.add_row(f"  [dim]{reason}", "", str(count))
    for emotion, count in sorted(listing.ignored_emotions.items()):
        summary.add_row(f"ignored emotion '{emotion}'", str(count), "0")
    if listing.missing_files:
        summary.add_row(f"{listing.label_file.name if listing.label_file else 'labels'} rows without a file",
                        str(len(listing.missing_files)), "0")
    return summary


def skipped_table(table: FeatureTable, limit: int = 20) -> Table | None:
    """Which files were skipped and why (the first `limit`)."""
    if not table.failed:
        return None
    listing = Table(title=f"skipped files ({len(table.failed)})", title_justify="left")
    listing.add_column("file")
    listing.add_column("reason")
    for path, reason in sorted(table.failed.items())[:limit]:
        listing.add_row(path, reason)
    if len(table.failed) > limit:
        listing.add_row(f"… {len(table.failed) - limit} more", "")
    return listing
