"""Console, progress bars and error display shared by the subcommands."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from petkit.errors import PetkitError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Tracker:
    """``tracker(n)`` advances the bar; ``tracker.set_total(n)`` once the size is known."""

    def __init__(self, progress: Progress, task):
        self.progress, self.task = progress, task

    def __call__(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def set_total(self, total: int) -> None:
        self.progress.update(self.task, total=total)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[Tracker]:
    """A bar on stderr that disappears when done (the summary says what happened)."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err_console, transient=True,
    ) as progress:
        yield Tracker(progress, progress.add_task(description, total=total))


def written(*items: tuple[str, Path | str]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    for what, path in items:
        table.add_row(f"[bold]{what}[/]", str(path))
    console.print(table)


def print_fields(items) -> None:
    """``(name, value)`` pairs as a two-column table (the 'info' commands)."""
    table = Table(show_header=False)
    for key, value in items:
        table.add_row(key, str(value))
    console.print(table)


def fail(error: PetkitError) -> None:
    err_console.print(f"[red]error:[/] {escape(error.message)}")
    if error.hint:
        err_console.print(f"[dim]hint:[/] {escape(error.hint)}")


def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_options(items: list[str]) -> dict[str, dict]:
    """['few_shot.n_way=10', 'retrieval.ks=[1,5]'] -> {'few_shot': {'n_way': 10}, 'retrieval': {'ks': [1, 5]}}."""
    import yaml

    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        protocol, dot, name = key.strip().partition(".")
        if not sep or not dot or not protocol or not name:
            raise PetkitError(f"--option '{item}' is not PROTOCOL.KEY=VALUE", "for example --option few_shot.n_way=10")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        options.setdefault(protocol, {})[name] = parsed
    return options
