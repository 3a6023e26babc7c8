"""docs/cli.md, generated from the Typer app so the reference cannot drift from the code.

Regenerate with ``python -m petkit.cli.reference > docs/cli.md``; a test compares the two.
"""

from __future__ import annotations

import typer

HEADER = """# CLI reference

Every command prints one-line errors with a hint; `petkit --debug COMMAND ...` shows tracebacks.
`petkit --version` prints the version. Long steps show a progress bar on stderr and end with a
summary of what was written where. This page is generated: `python -m petkit.cli.reference > docs/cli.md`.
"""
# the pipeline's order first; any other registered command follows alphabetically (none is left out)
ORDER = ("prepare", "train", "embed", "evaluate", "report", "audit", "calibrate", "submit", "search", "index", "export-onnx",
         "serve", "gallery", "synth", "demo", "plugins")


def cli_reference() -> str:
    from petkit.cli import _register_commands, app

    _register_commands()
    root = typer.main.get_command(app)
    parts = [HEADER]
    names = [n for n in ORDER if n in root.commands] + sorted(set(root.commands) - set(ORDER))
    for name in names:
        command = root.commands[name]
        for title, sub in (((f"petkit {name} {n}", c) for n, c in command.commands.items()) if hasattr(command, "commands")
                           else [(f"petkit {name}", command)]):
            parts.append(_section(title, sub))
    return "\n".join(parts)


def _section(title: str, command) -> str:
    paragraphs = [p.strip().replace("\n", " ") for p in (command.help or "").strip().split("\n\n") if p.strip()]
    lines = [f"## {title}", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    lines += ["| argument / option | default | meaning |", "|---|---|---|"]
    for param in command.params:
        if "--help" in getattr(param, "opts", ()):
            continue
        if param.param_type_name == "argument":
            lines.append(f"| `{param.name.upper()}` | {'required' if param.required else '-'} | {getattr(param, 'help', '') or ''} |")
        else:
            lines.append(f"| {', '.join(f'`{o}`' for o in param.opts)} | {_default(param.default)} | {param.help or ''} |")
    return "\n".join(lines) + "\n"


def _default(value) -> str:
    if value is None or value is False or callable(value) or (isinstance(value, (list, tuple)) and not value):
        return "-"
    return f"`{','.join(map(str, value))}`" if isinstance(value, (list, tuple)) else f"`{value}`"


if __name__ == "__main__":
    print(cli_reference(), end="")
