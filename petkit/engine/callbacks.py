"""Trainer callbacks: everything a run writes or shows, one small interface.

A :class:`Callback` overrides the hooks it needs; the :class:`~petkit.engine.trainer.Trainer`
calls them in order. Checkpoints, history.csv, train.log, early stopping and TensorBoard are
callbacks the trainer adds itself; the CLI's progress display is one the caller passes. A
distributed-rank filter, a report hook or another logger is one more callback.

Hooks (``trainer`` is the running :class:`Trainer`; its ``state`` holds epoch, history, the
best value of ``train.val_metric`` and the epochs without improvement):

- ``on_message(trainer, text)``: a setup line (engine, data, what was left out);
- ``on_loading(trainer, what, total)`` / ``on_loaded(trainer, count)``: image-cache progress;
- ``on_fit_start(trainer)``: data and model are ready, the run folder exists;
- ``on_epoch_start(trainer, epoch, steps)``;
- ``on_step_end(trainer, loss, lr, images_per_s)``: after every batch (``loss`` is the running
  mean of the epoch, refreshed every few steps: reading it synchronises the device);
- ``on_epoch_end(trainer, row)``: ``row`` holds the epoch's train and ``val_*`` numbers;
  ``row["epoch"] == 0`` is the untrained model's validation (nothing was trained yet);
  ``trainer.state.improved`` says whether this epoch is the best so far;
- ``on_fit_end(trainer, result)``.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING

from petkit.errors import PetkitError
from petkit.io import write_text

if TYPE_CHECKING:
    from petkit.engine.trainer import Trainer, TrainResult


class Callback:
    """Every hook does nothing by default."""

    def on_message(self, trainer: Trainer, text: str) -> None: ...
    def on_loading(self, trainer: Trainer, what: str, total: int) -> None: ...
    def on_loaded(self, trainer: Trainer, count: int) -> None: ...
    def on_fit_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer, epoch: int, steps: int) -> None: ...
    def on_step_end(self, trainer: Trainer, loss: float, lr: float, images_per_s: float) -> None: ...
    def on_epoch_end(self, trainer: Trainer, row: dict) -> None: ...
    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None: ...


def format_row(row: dict, val_metric: str) -> str:
    """One line per epoch: train loss, learning rate, speed and the configured val metric."""
    parts = [f"epoch {row['epoch']}"]
    for key in ("train_loss", "lr", "images_per_s", f"val_{val_metric}"):
        if key in row and row[key] == row[key]:  # NaN: not measured
            parts.append(f"{key}={row[key]:.4g}")
    return " ".join(parts)


class TrainLog(Callback):
    """train.log: setup lines, one line per epoch (``*best`` marks an improvement), the stop reason."""

    def __init__(self, path: Path, append: bool):
        self.path = path
        self.append = append
        self.pending: list[str] = []  # setup lines from before the run folder exists
        self.started = False

    def write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def on_message(self, trainer: Trainer, text: str) -> None:
        if self.started:
            self.write(text)
        else:
            self.pending.append(text)

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.append:
            self.path.write_text("", encoding="utf-8")
        self.started = True
        for line in self.pending:
            self.write(line)
        self.pending = []

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if row.get(HISTORY_NOTE):
            self.write(f"epoch {row['epoch']}: {row[HISTORY_NOTE]}")
        improved = row["epoch"] > 0 and trainer.state.improved
        self.write(format_row(row, trainer.config.train.val_metric) + (" *best" if improved else ""))

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if result.stop_reason:
            self.write(result.stop_reason)


STEP_COLUMNS = ("epoch", "batch", "step", "loss", "lr")


class StepLog(Callback):
    """steps.csv: the loss and learning rate of every batch (history.csv has one row per epoch, so
    warmup and restarts only show here). Written at each epoch's end: reading a loss syncs the device."""

    def __init__(self, path: Path, append: bool):
        self.path, self.append = path, append
        self.step = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        kept: list[str] = []
        if self.append and self.path.exists():  # resumed: keep the steps of the epochs the checkpoint holds
            lines = self.path.read_text(encoding="utf-8").splitlines()[1:]
            kept = [line for line in lines if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= trainer.state.epoch]
        self.step = len(kept)
        write_text(self.path, "".join(f"{line}\n" for line in (",".join(STEP_COLUMNS), *kept)))

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if row["epoch"] == 0:
            return
        lines = []
        for batch, loss, lr in trainer.step_losses:
            self.step += 1
            lines.append(f"{row['epoch']},{batch},{self.step},{float(loss):.6g},{lr:.6g}\n")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(lines)


HISTORY_BASE = ("epoch", "train_loss", "lr", "images_per_s", "seconds")
HISTORY_NOTE = "note"  # last column: what changed at this epoch (e.g. settings changed on resume)


class History(Callback):
    """history.csv, rewritten atomically after every epoch: the source of truth for curves."""

    def __init__(self, path: Path, val_columns: tuple[str, ...]):
        self.path = path
        self.columns = (*HISTORY_BASE, *val_columns, HISTORY_NOTE)

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        self.write(trainer.state.history)

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.write(result.history)

    def write(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        write_text(self.path, buffer.getvalue())


class Checkpointer(Callback):
    """last.pt (resumable) after every trained epoch; best.pt (model card + weights only) when it improved."""

    def __init__(self, last: Path, best: Path):
        self.last, self.best = last, best

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if row["epoch"] == 0:
            return
        trainer.save_run_checkpoint(self.last)
        if trainer.state.improved or not self.best.exists():
            trainer.save_model(self.best)


class EarlyStopping(Callback):
    """Stop after ``patience`` validated epochs without a better ``train.val_metric``."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if row["epoch"] > 0 and trainer.has_validation and 0 < self.patience <= trainer.state.bad_epochs:
            trainer.stop(f"early stop: no {trainer.config.train.val_metric} improvement for {self.patience} epochs")


class TensorBoardLogger(Callback):
    """Scalars for TensorBoard under runs/<name>/tensorboard/: per step (loss, lr) and per epoch (every row value).

    history.csv stays the source of truth; this is for watching a run live (``tensorboard --logdir runs``).
    """

    def __init__(self, log_dir: Path, every: int = 10):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch ships the module, the tensorboard package provides the writer
            raise PetkitError("train.loggers names tensorboard, but the tensorboard package is not installed",
                              "pip install tensorboard (or drop tensorboard from train.loggers)") from exc
        self.log_dir, self.every, self._writer_cls = log_dir, every, SummaryWriter
        self.writer = None
        self.steps = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self.writer = self._writer_cls(log_dir=str(self.log_dir))
        self.steps = trainer.state.global_step

    def on_step_end(self, trainer: Trainer, loss: float, lr: float, images_per_s: float) -> None:
        self.steps += 1
        if self.writer is not None and self.steps % self.every == 0:
            self.writer.add_scalar("step/train_loss", loss, self.steps)
            self.writer.add_scalar("step/lr", lr, self.steps)

    def on_epoch_end(self, trainer: Trainer, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, float) and value == value:
                self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self.writer is not None:
            self.writer.close()


LOGGERS = {"tensorboard": lambda run_dir: TensorBoardLogger(run_dir / "tensorboard")}
