"""petkit train"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from petkit.cli.common import console, err_console, written
from petkit.engine.callbacks import Callback


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        help=(
            "Train an embedding model; writes runs/<name>/ (config.yaml, last.pt, best.pt, history.csv, train.log).\n\n"
            "Settings come from the defaults, then --config YAML, then the flags, then KEY=VALUE overrides "
            "(dotted config keys).\n\n"
            "Example: petkit train --manifest data/manifest.csv --loss arcface --backbone resnet50 --epochs 30 optim.lr=3e-4"
        ),
    )(train_command)


def train_command(
    overrides: Optional[List[str]] = typer.Argument(None, help="Config overrides such as train.epochs=5 loss.args.margin=0.3."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config file."),
    manifest: Optional[str] = typer.Option(None, "--manifest", "-m", help="manifest.csv from 'petkit prepare' (train + val splits)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name: output goes to <output-dir>/<name>/."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Parent folder of runs (default: runs)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="Loss name (see 'petkit plugins list')."),
    miner: Optional[str] = typer.Option(None, "--miner", help="Miner name, or 'none' for the loss's default."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Batch sampler: pk, class_balanced, siamese_pairs."),
    augment: Optional[str] = typer.Option(None, "--augment", help="Augmentation: batched, pet_faces, faces_distortion, classification, none."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw, adam or sgd."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="warmup_cosine, cosine, cosine_restarts, step, multistep, plateau, constant."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="A registered backbone or any timm model name."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Number of epochs."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Square input side in pixels."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto, fp32, fp16 (CUDA) or bf16."),
    resume: bool = typer.Option(False, "--resume", help="Continue runs/<name>/ from last.pt (uses the run's config.yaml)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the training curves to runs/<name>/report/ at the end."),
) -> None:
    from petkit.engine.trainer import train, train_config

    given = {
        "data.manifest": manifest, "name": name, "output_dir": output_dir, "train.epochs": epochs, "data.image_size": image_size,
        "optim.lr": lr, "train.device": device, "train.precision": precision, "loss": loss, "data.sampler": sampler,
        "data.augment": augment, "optim.optimizer": optimizer, "optim.schedule": schedule, "miner": miner,
    }
    flags = {key: value for key, value in given.items() if value is not None}
    if miner == "none":
        flags["miner"] = None
    settings = train_config(config, overrides or [], flags, backbone, resume)
    reporter = RichReporter()
    with reporter:
        result = train(settings, resume=resume, callbacks=[reporter])
    _summary(result)
    if report:
        from petkit.report import build_report

        pages = build_report(run=result.run_dir, out=result.run_dir / "report", overwrite=True)
        written(("report", pages.index))


class RichReporter(Callback):
    """The progress display: setup lines, a bar per epoch (loss, lr, images/s), one line per epoch."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def on_message(self, trainer, text: str) -> None:
        console.print(text)

    def on_loading(self, trainer, what: str, total: int) -> None:
        self._new_task(f"loading {what}", total or None)

    def on_loaded(self, trainer, count: int) -> None:
        self.progress.advance(self.task, count)

    def on_epoch_start(self, trainer, epoch: int, steps: int) -> None:
        self._new_task(f"epoch {epoch}/{trainer.config.train.epochs}", steps)

    def on_step_end(self, trainer, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(self.task, advance=1, info=f"loss {loss:.4f} lr {lr:.2e} {images_per_s:.0f} img/s")

    def on_epoch_end(self, trainer, row: dict) -> None:
        metric = trainer.config.train.val_metric
        parts = [f"epoch {row['epoch']:>3}"]
        if "train_loss" in row:
            parts.append(f"loss {row['train_loss']:.4f}  {row['images_per_s']:.0f} img/s")
        value = row.get(f"val_{metric}")
        if value is not None and value == value:
            parts.append(f"val {metric} {value:.3f}" + ("  *best" if row["epoch"] > 0 and trainer.state.improved else ""))
        if row["epoch"] == 0:
            parts.append("(untrained)")
        console.print("  ".join(parts))

    def _new_task(self, description: str, total) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total, info="")


def _summary(result) -> None:
    best = f"best val {result.val_metric} {result.best_metric:.4f}" if result.best_metric is not None else "no val split: best = last"
    stop = f" ({result.stop_reason})" if result.stop_reason else ""
    console.print(f"trained {len(result.history) - (1 if result.history and result.history[0]['epoch'] == 0 else 0)} epochs{stop}; {best}")
    for warning in result.warnings:
        err_console.print(f"[yellow]{escape(warning)}[/]")
    written(("best checkpoint", result.best_checkpoint), ("last checkpoint", result.last_checkpoint),
            ("history", result.run_dir / "history.csv"), ("config", result.run_dir / "config.yaml"),
            ("log", result.run_dir / "train.log"))
