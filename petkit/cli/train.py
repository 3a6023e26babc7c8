"""petkit train"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from petkit.cli.common import console, err_console, written
from petkit.engine.trainer import TrainReporter


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
) -> None:
    from petkit.config import resolve
    from petkit.engine.trainer import check_components, train

    flags = _flag_overrides(manifest, name, output_dir, epochs, image_size, lr, device, precision)
    flags += _component_overrides(loss=loss, miner=miner, sampler=sampler, augment=augment, optimizer=optimizer, schedule=schedule)
    base_path = config
    if resume:
        base_path = _resume_config(config, name, output_dir)
    settings = resolve(base_path, [*flags, *(overrides or [])])
    if backbone:
        settings.model.backbone = _backbone_spec(backbone, settings.model.backbone)
    check_components(settings)
    reporter = RichReporter()
    with reporter:
        result = train(settings, resume=resume, reporter=reporter)
    _summary(result, settings.train.val_metric)


def _flag_overrides(manifest, name, output_dir, epochs, image_size, lr, device, precision) -> list[str]:
    pairs = [
        ("data.manifest", manifest), ("name", name), ("output_dir", output_dir), ("train.epochs", epochs),
        ("data.image_size", image_size), ("optim.lr", lr), ("train.device", device), ("train.precision", precision),
    ]
    return [f"{key}={value}" for key, value in pairs if value is not None]


_COMPONENT_PATHS = {"loss": "loss", "miner": "miner", "sampler": "data.sampler", "augment": "data.augment",
                    "optimizer": "optim.optimizer", "schedule": "optim.schedule"}


def _component_overrides(**names: Optional[str]) -> list[str]:
    """--loss X style flags: a new component by name, with that component's default args."""
    out = []
    for flag, value in names.items():
        if not value:
            continue
        path = _COMPONENT_PATHS[flag]
        out.append(f"{path}=null" if flag == "miner" and value == "none" else f"{path}={{name: {value}}}")
    return out


def _resume_config(config: Optional[Path], name: Optional[str], output_dir: Optional[str]) -> Path:
    from petkit.errors import PetkitError

    if config is not None:
        return config
    if not name:
        raise PetkitError("--resume needs --name (the run to continue)", "for example: petkit train --resume --name my-run")
    return Path(output_dir or "runs") / name / "config.yaml"


def _backbone_spec(name: str, current):
    from petkit.config import Component
    from petkit.registry import BACKBONES

    if name in BACKBONES:
        return Component(name)
    args = dict(current.args) if current.name == "timm" else {}
    args["model"] = name
    return Component("timm", args)


class RichReporter(TrainReporter):
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

    def setup(self, message: str) -> None:
        console.print(message)

    def loading(self, what: str, total: int) -> None:
        self._new_task(f"loading {what}", total or None)

    def loaded(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._new_task(f"epoch {epoch}/{epochs}", steps)

    def step(self, loss: float, lr: float, images_per_s: float) -> None:
        self.progress.update(self.task, advance=1, info=f"loss {loss:.4f} lr {lr:.2e} {images_per_s:.0f} img/s")

    def epoch_end(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']:>3}"]
        if "train_loss" in row:
            parts.append(f"loss {row['train_loss']:.4f}  {row['images_per_s']:.0f} img/s")
        if "val_recall@1" in row:
            parts.append(f"val Recall@1 {row['val_recall@1']:.3f}  mAP@R {row['val_mAP@R']:.3f}")
        if row["epoch"] == 0:
            parts.append("(untrained)")
        console.print("  ".join(parts))

    def _new_task(self, description: str, total) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(description, total=total, info="")


def _summary(result, metric: str) -> None:
    best = f"best val {metric} {result.best_metric:.4f}" if result.best_metric is not None else "no val split: best = last"
    stop = " (early stop)" if result.stopped_early else ""
    console.print(f"trained {len(result.history) - (1 if result.history and result.history[0]['epoch'] == 0 else 0)} epochs{stop}; {best}")
    written(("best checkpoint", result.best_checkpoint), ("last checkpoint", result.last_checkpoint),
            ("history", result.run_dir / "history.csv"), ("config", result.run_dir / "config.yaml"),
            ("log", result.run_dir / "train.log"))
