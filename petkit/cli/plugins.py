"""petkit plugins list"""

from __future__ import annotations

import typer
from rich.table import Table

from petkit.cli.common import console

app = typer.Typer(help="Inspect registered components (built-in and from plugin packages).", no_args_is_help=True)


@app.command("list", help="Show every registered component by kind with the package it comes from.\n\nExample: petkit plugins list --kind losses")
def list_command(kind: str = typer.Option(None, "--kind", help="Only this registry (backbones, losses, miners, ...).")) -> None:
    from petkit.errors import PetkitError
    from petkit.registry import ALL_REGISTRIES

    registries = [r for r in ALL_REGISTRIES if kind in (None, r.kind)]
    if not registries:
        raise PetkitError(f"unknown kind '{kind}'", f"use one of {', '.join(r.kind for r in ALL_REGISTRIES)}")
    table = Table(title="petkit components")
    for column in ("kind", "name", "package", "description"):
        table.add_column(column)
    for registry in registries:
        for entry in registry.entries():
            table.add_row(registry.kind, entry.name, entry.source, entry.summary)
    console.print(table)
