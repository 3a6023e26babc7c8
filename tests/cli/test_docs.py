"""Examples and docs stay true: configs resolve, documented options exist."""

import re
from pathlib import Path

import pytest
import typer.main

from petkit.cli import _register_commands, app
from petkit.config import resolve
from petkit.engine.trainer import check_components

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_resolves_to_registered_components(path):
    check_components(resolve(path))


def test_default_example_is_the_default_recipe():
    example = resolve(ROOT / "examples" / "default.yaml")
    assert example.model == resolve().model and example.loss == resolve().loss and example.miner == resolve().miner


def test_cli_reference_is_generated_from_the_app_and_covers_every_command():
    from petkit.cli.reference import ORDER, cli_reference

    _register_commands()
    assert set(ORDER) == set(typer.main.get_command(app).commands), "add the new command to petkit.cli.reference.ORDER"
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference(), "regenerate: python -m petkit.cli.reference > docs/cli.md"


def test_readme_commands_exist():
    _register_commands()
    commands = set(typer.main.get_command(app).commands)
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    used = set(re.findall(r"^petkit ([a-z-]+)", "\n".join(blocks), flags=re.M))
    assert used and used <= commands


def documented_command_lines() -> list[tuple[str, str]]:
    """(file, line) for every `petkit ...` line in a bash block of the README, docs/ and examples/."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "examples" / "README.md"]
    lines = []
    for path in files:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            lines += [(path.name, line.split("  #")[0].strip()) for line in block.splitlines() if line.startswith("petkit ")]
    return lines


def test_every_documented_command_line_parses():
    """Each documented line names a real command and only options that command has."""
    import shlex

    _register_commands()
    root = typer.main.get_command(app)
    lines = documented_command_lines()
    assert len(lines) > 40 and any(name == "face-course.md" for name, _ in lines)
    wrong = []
    for name, line in lines:
        words = shlex.split(line.split(" && ")[0])[1:]
        command = root.commands.get(words[0])
        if command is not None and hasattr(command, "commands"):
            command, words = command.commands.get(words[1]), words[1:]
        if command is None:
            wrong.append(f"{name}: {line}")
            continue
        known = {opt for param in command.params for opt in getattr(param, "opts", [])}
        wrong += [f"{name}: {line} ({word})" for word in words if word.startswith("-") and word not in known]
    assert not wrong, wrong
