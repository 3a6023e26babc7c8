"""``petkit train``: manifest -> runs/<name>/ (config.yaml, last.pt, best.pt, history.csv, train.log).

One epoch: P x K batches from the train split, batched augmentation on the device, forward
under autocast, loss in fp32, scaled backward + clip + step, per-batch schedule. After each
epoch the model embeds the val split (leave-one-out retrieval) and the val metric decides
the best checkpoint and early stopping. Epoch 0 is the untrained model's score.
"""

from __future__ import annotations

import csv
import inspect
import io
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch

from petkit.config import Config, dump_yaml, to_dict
from petkit.data import manifest as mf
from petkit.data.batches import ImageStore
from petkit.engine.ema import ModelEma
from petkit.engine.engine import Engine
from petkit.engine.inference import embed_store
from petkit.errors import PetkitError
from petkit.evaluation.metrics import retrieval_metrics
from petkit.io import atomic_path, write_text
from petkit.models.backbones import build_backbone
from petkit.models.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from petkit.models.model import EmbeddingModel, build_model
from petkit.registry import AUGMENTATIONS, BACKBONES, HEADS, LOSSES, MINERS, OPTIMIZERS, SAMPLERS, SCHEDULES

VAL_METRICS = ("recall@1", "recall@5", "mAP", "mAP@R", "R-precision", "precision@1", "accuracy")
PARAMETER_GROUPS = ("backbone", "head", "loss")


class TrainReporter:
    """Hooks for progress display; the default reports nothing."""

    def setup(self, message: str) -> None: ...
    def loading(self, what: str, total: int) -> None: ...
    def loaded(self, count: int) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, loss: float, lr: float, images_per_s: float) -> None: ...
    def epoch_end(self, row: dict) -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    best_metric: float | None
    stopped_early: bool
    engine: str


@dataclass
class _State:
    epoch: int = 0
    best_metric: float | None = None
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def check_components(config: Config) -> None:
    """Fail on unknown component names and mismatched combinations before any data is read."""
    for registry, spec in ((LOSSES, config.loss), (MINERS, config.miner), (SAMPLERS, config.data.sampler),
                           (BACKBONES, config.model.backbone), (HEADS, config.model.head), (AUGMENTATIONS, config.data.augment),
                           (OPTIMIZERS, config.optim.optimizer), (SCHEDULES, config.optim.schedule)):
        if spec is not None:
            registry.get(spec.name)
    if config.miner is not None and not _takes_miner(config.loss.name):
        raise PetkitError(f"loss '{config.loss.name}' does not use a miner, but miner '{config.miner.name}' is set",
                          "drop --miner (or set miner: null); miners serve triplet, quadruplet and contrastive")
    unknown_groups = sorted(set(config.optim.group_lr) - set(PARAMETER_GROUPS))
    if unknown_groups:
        raise PetkitError(f"optim.group_lr has unknown groups {unknown_groups}", f"use {', '.join(PARAMETER_GROUPS)}")
    if config.train.accumulate_steps < 1:
        raise PetkitError(f"train.accumulate_steps must be >= 1, got {config.train.accumulate_steps}")
    if config.model.backbone.name == "timm":
        model = config.model.backbone.args.get("model", "resnet18")
        if not timm.is_model(model):
            build_backbone(config.model.backbone)  # raises with close matches


def train(config: Config, resume: bool = False, reporter: TrainReporter | None = None) -> TrainResult:
    reporter = reporter or TrainReporter()
    check_components(config)
    run_dir = config.run_dir
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    _check_run_dir(run_dir, last_path, resume)
    if config.train.val_metric not in VAL_METRICS:
        raise PetkitError(f"train.val_metric '{config.train.val_metric}' is not one of {', '.join(VAL_METRICS)}")
    _seed_everything(config.train.seed)

    manifest = _read_train_manifest(config).labelled()
    train_rows = manifest.select("train") if manifest.has(mf.SPLIT) else manifest
    val_rows = manifest.select("val").real() if manifest.has(mf.SPLIT) else None
    identities = train_rows.identities()
    label_of = {name: i for i, name in enumerate(identities)}
    labels = torch.tensor([label_of[r[mf.IDENTITY]] for r in train_rows.rows])

    engine = Engine.create(config.train.device, config.train.precision, config.train.channels_last)
    reporter.setup(f"engine: {engine.describe()}")
    model, preprocessing = build_model(config.model, config.data.image_size, config.data.mean, config.data.std)
    sampler = SAMPLERS.build(config.data.sampler, labels=labels.tolist(), seed=config.train.seed)
    loss_fn = LOSSES.build(config.loss, num_classes=len(identities), embedding_dim=model.embedding_dim, miner=_miner(config, sampler))
    is_fake = _fake_flags(loss_fn, train_rows, config)
    if is_fake is None and any(v == "1" for v in train_rows.values(mf.IS_FAKE)):
        # a fake of X labelled X would teach the model that forgeries match: only fake-aware losses see them
        reporter.setup(f"{len(train_rows) - len(train_rows.real())} fake train images left out: loss '{config.loss.name}' does not use them")
        train_rows = train_rows.real()
        labels = torch.tensor([label_of[r[mf.IDENTITY]] for r in train_rows.rows])
        sampler = SAMPLERS.build(config.data.sampler, labels=labels.tolist(), seed=config.train.seed)
    if config.train.val_metric == "accuracy" and not hasattr(loss_fn, "classifier"):
        raise PetkitError(f"train.val_metric 'accuracy' needs a classification loss; '{config.loss.name}' has no classifier",
                          "use recall@1, or a loss such as cross_entropy, arcface or cosface")
    augmentation = AUGMENTATIONS.build(config.data.augment, image_size=config.data.image_size)
    model = engine.prepare(model)
    loss_fn = loss_fn.to(engine.device)

    steps_per_epoch = -(-len(sampler) // config.train.accumulate_steps)  # optimiser steps
    optimizer = OPTIMIZERS.build(config.optim.optimizer, params=_parameter_groups(model, loss_fn, config), lr=config.optim.lr)
    scheduler = SCHEDULES.build(config.optim.schedule, optimizer=optimizer, steps_per_epoch=steps_per_epoch, epochs=config.train.epochs)
    ema = ModelEma(model, config.train.ema_decay) if config.train.ema_decay else None
    generator = torch.Generator().manual_seed(config.train.seed)
    state = _State()
    if resume:
        state = _restore(last_path, config, model, loss_fn, optimizer, scheduler, engine, generator, ema)
    step = _Step(model, loss_fn, optimizer, scheduler, engine, config, augmentation, generator, ema, labels, is_fake)

    train_store = _store(train_rows, config, reporter, "train images")
    val_store = _store(val_rows, config, reporter, "val images") if val_rows is not None and len(val_rows) else None
    val_labels = np.array(val_rows.values(mf.IDENTITY)) if val_store is not None else None

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", dump_yaml(config))
    log = _Log(run_dir / "train.log", append=resume)
    log.write(f"petkit train: {len(train_rows)} train images of {len(identities)} identities; "
              f"val: {len(val_rows) if val_store is not None else 0} images; engine {engine.describe()}")

    val_targets = np.array([label_of.get(name, -1) for name in val_labels]) if val_store is not None else None  # -1: unseen
    validate = lambda: _validate(ema.module if ema else model, loss_fn, val_store, val_labels, val_targets, engine)  # noqa: E731
    if state.epoch == 0 and val_store is not None:  # the untrained model's score
        row = {"epoch": 0, **validate()}
        state.history.append(row)
        reporter.epoch_end(row)
        log.write(_format_row(row))

    stopped_early = False
    for epoch in range(state.epoch + 1, config.train.epochs + 1):
        reporter.epoch_start(epoch, config.train.epochs, steps_per_epoch)
        sampler.set_epoch(epoch)
        row = {"epoch": epoch, **_train_epoch(step, train_store, sampler, reporter)}
        if val_store is not None:
            row.update(validate())
        scheduler.epoch_end(row.get(f"val_{config.train.val_metric}"))
        state.history.append(row)
        state.epoch = epoch
        improved = _update_best(state, row, config)
        payload = _payload(state, optimizer, scheduler, engine, loss_fn, generator, ema, model)
        fingerprint = save_checkpoint(last_path, ema.module if ema else model, config, preprocessing, **payload)
        if improved:
            _copy_atomic(last_path, best_path)
        row["fingerprint"] = fingerprint
        reporter.epoch_end(row)
        log.write(_format_row(row) + (" *best" if improved else ""))
        _write_history(run_dir / "history.csv", state.history)
        patience = config.train.early_stopping_patience
        if patience is not None and val_store is not None and 0 < patience <= state.bad_epochs:
            stopped_early = True
            log.write(f"early stop: no {config.train.val_metric} improvement for {patience} epochs")
            break
    if not best_path.exists() and last_path.exists():
        _copy_atomic(last_path, best_path)
    _write_history(run_dir / "history.csv", state.history)
    return TrainResult(run_dir, best_path, last_path, state.history, state.best_metric, stopped_early, engine.describe())


# ---------------------------------------------------------------------------------------
# the epoch


class _Step:
    """One batch of training: augment, forward under autocast, loss in fp32, (accumulated) step."""

    def __init__(self, model, loss_fn, optimizer, scheduler, engine: Engine, config: Config, augmentation, generator, ema, labels, is_fake):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.engine, self.config, self.augmentation, self.generator, self.ema = engine, config, augmentation, generator, ema
        self.labels, self.is_fake = labels, is_fake
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.accumulate = config.train.accumulate_steps

    def __call__(self, indices: list[int], batch: torch.Tensor, position: int, last: bool) -> torch.Tensor:
        images = self.augmentation(self.engine.images(batch), self.generator)
        if self.engine.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        extra = {"is_fake": self.is_fake[indices].to(self.engine.device)} if self.is_fake is not None else {}
        with self.engine.autocast():
            embeddings = self.model(images)
        loss = self.loss_fn(embeddings.float(), self.labels[indices].to(self.engine.device, non_blocking=True), **extra)
        if not torch.isfinite(loss):
            raise PetkitError(
                f"training diverged: loss is {loss.item()}",
                "lower optim.lr, keep train.grad_clip set, or try --precision fp32",
            )
        self.engine.backward(loss / self.accumulate)
        if (position + 1) % self.accumulate == 0 or last:
            self.engine.step(self.optimizer, self.parameters, self.config.train.grad_clip)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
        return loss.detach()


def _train_epoch(step: _Step, store: ImageStore, sampler, reporter: TrainReporter) -> dict:
    step.model.train()
    step.loss_fn.train()
    step.optimizer.zero_grad(set_to_none=True)
    total_loss, total_images, started = 0.0, 0, time.perf_counter()
    losses = []
    batches = len(sampler)
    for position, (indices, batch) in enumerate(store.batches(sampler)):
        losses.append(step(indices, batch, position, position == batches - 1))
        total_images += len(indices)
        if len(losses) % 5 == 1:  # .item() syncs the device: not every step
            total_loss = float(torch.stack(losses).mean())
        reporter.step(total_loss, step.optimizer.param_groups[0]["lr"], total_images / (time.perf_counter() - started))
    seconds = time.perf_counter() - started
    return {
        "train_loss": float(torch.stack(losses).mean()) if losses else float("nan"),
        "lr": step.optimizer.param_groups[0]["lr"],
        "images_per_s": total_images / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
    }


def _validate(model: EmbeddingModel, loss_fn, store: ImageStore, labels: np.ndarray, targets: np.ndarray, engine: Engine) -> dict:
    vectors = embed_store(model, store, engine)
    result = retrieval_metrics(vectors, labels, vectors, labels, ks=(1, 5), leave_one_out=True)
    row = {f"val_{k}": result.metrics.get(k, float("nan")) for k in VAL_METRICS}
    row["val_accuracy"] = _closed_set_accuracy(loss_fn, vectors, targets, engine)
    return row


@torch.no_grad()
def _closed_set_accuracy(loss_fn, vectors: np.ndarray, targets: np.ndarray, engine: Engine) -> float:
    """Accuracy of the loss's classifier on val images of identities seen in training (NaN otherwise)."""
    classifier = getattr(loss_fn, "classifier", None)
    seen = targets >= 0
    if classifier is None or not seen.any():
        return float("nan")
    logits = classifier(torch.from_numpy(vectors[seen]).to(engine.device))
    return float((logits.argmax(1).cpu().numpy() == targets[seen]).mean())


def _update_best(state: _State, row: dict, config: Config) -> bool:
    value = row.get(f"val_{config.train.val_metric}")
    if value is None or np.isnan(value):
        return True  # no validation: the newest checkpoint is the best we know
    if state.best_metric is None or value > state.best_metric:
        state.best_metric, state.bad_epochs = float(value), 0
        return True
    state.bad_epochs += 1
    return False


# ---------------------------------------------------------------------------------------
# setup helpers


def _check_run_dir(run_dir: Path, last_path: Path, resume: bool) -> None:
    if resume and not last_path.is_file():
        raise PetkitError(f"nothing to resume: {last_path} does not exist", "start the run without --resume")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise PetkitError(
            f"run folder {run_dir} already exists",
            "pass --resume to continue it, or choose another --name",
        )


def _read_train_manifest(config: Config) -> mf.Manifest:
    if not config.data.manifest:
        raise PetkitError("no training manifest given", "pass --manifest path/to/manifest.csv (from 'petkit prepare')")
    return mf.read_manifest(config.data.manifest)


def _store(rows: mf.Manifest, config: Config, reporter: TrainReporter, what: str) -> ImageStore:
    reporter.loading(what, len(rows) if config.data.cache_images else 0)
    store = ImageStore(rows, config.data.image_size, config.data.cache_images, config.data.num_workers, reporter.loaded)
    return store


def _takes_miner(loss_name: str) -> bool:
    return "miner" in inspect.signature(LOSSES.get(loss_name)).parameters


def _miner(config: Config, sampler):
    """The configured miner; with the siamese_pairs sampler the pairs are the batch's (0, 1), (2, 3), ..."""
    pair_sampler = getattr(sampler, "adjacent_pairs", False)
    if pair_sampler and config.miner is not None and config.miner.name != "adjacent_pairs":
        raise PetkitError(f"the {config.data.sampler.name} sampler lays out pairs for the adjacent_pairs miner, not '{config.miner.name}'",
                          "drop --miner, or use the pk sampler for mined pairs")
    if pair_sampler and not _takes_miner(config.loss.name):
        raise PetkitError(f"the {config.data.sampler.name} sampler makes pairs, but loss '{config.loss.name}' does not train on pairs",
                          "use --loss contrastive with it")
    if config.miner is not None:
        return MINERS.build(config.miner)
    return MINERS.build({"name": "adjacent_pairs"}) if pair_sampler else None


def _fake_flags(loss_fn, rows: mf.Manifest, config: Config) -> torch.Tensor | None:
    """is_fake per train row for losses that need it; a clear error when the manifest has none."""
    if not getattr(loss_fn, "needs_fake", False):
        return None
    flags = torch.tensor([v == "1" for v in rows.values(mf.IS_FAKE)], dtype=torch.bool)
    if not bool(flags.any()):
        where = "has no is_fake column" if not rows.has(mf.IS_FAKE) else "marks no train image as fake (is_fake=1)"
        raise PetkitError(
            f"loss '{config.loss.name}' pushes fake images away, but manifest {config.data.manifest} {where}",
            "put each identity's fakes in <identity>/fake/ and run 'petkit prepare', or add an is_fake column (0/1) to the manifest",
        )
    if bool(flags.all()):
        raise PetkitError(f"loss '{config.loss.name}': every train image is marked fake; it needs real images as anchors")
    return flags


def _parameter_groups(model: torch.nn.Module, loss_fn: torch.nn.Module, config: Config) -> list[dict]:
    """Per module (backbone, head, loss), decay and no-decay groups with the module's learning rate."""
    groups = []
    modules = {"backbone": model.backbone, "head": model.head, "loss": loss_fn}
    for name, module in modules.items():
        lr = config.optim.group_lr.get(name, config.optim.lr)
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]  # biases, norms, GeM p
        # class centres are directions, not weights to shrink: no decay on loss parameters
        decay_rate = 0.0 if name == "loss" else config.optim.weight_decay
        groups += [{"params": params, "weight_decay": wd, "lr": lr, "name": f"{name}{suffix}"}
                   for params, wd, suffix in ((decay, decay_rate, ""), (no_decay, 0.0, "_no_decay")) if params]
    return groups


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _payload(state: _State, optimizer, scheduler, engine: Engine, loss_fn, generator, ema, model) -> dict:
    extra = {"ema": ema.state_dict(), "train_model": model.state_dict()} if ema else {}
    return {
        **extra,
        "epoch": state.epoch,
        "history": state.history,
        "best_metric": state.best_metric,
        "bad_epochs": state.bad_epochs,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "engine": engine.state_dict(),
        "loss": loss_fn.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "augment": generator.get_state()},
    }


def _restore(path: Path, config: Config, model, loss_fn, optimizer, scheduler, engine: Engine, generator, ema) -> _State:
    saved = read_checkpoint(path)
    if saved["config"]["model"] != to_dict(config)["model"] or saved["config"]["loss"] != to_dict(config)["loss"]:
        raise PetkitError(
            f"cannot resume {path}: the model or loss in the config differs from the one it was trained with",
            "resume with the run's own config.yaml (only train.* settings may change)",
        )
    load_model_state(model, saved.get("train_model", saved["model"]), str(path))
    if ema is not None:
        if "ema" not in saved:
            raise PetkitError(f"cannot resume {path} with train.ema_decay set: the run was trained without EMA",
                              "resume without changing train.ema_decay")
        ema.load_state_dict(saved["ema"])
    loss_fn.load_state_dict(saved["loss"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    engine.load_state_dict(saved.get("engine", {}))
    torch.set_rng_state(saved["rng"]["torch"])
    generator.set_state(saved["rng"]["augment"])
    return _State(saved["epoch"], saved["best_metric"], saved["bad_epochs"], list(saved["history"]))


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


HISTORY_COLUMNS = ("epoch", "train_loss", "lr", "images_per_s", "seconds", *(f"val_{k}" for k in VAL_METRICS))


def _write_history(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def _format_row(row: dict) -> str:
    parts = [f"epoch {row['epoch']}"]
    for key in ("train_loss", "lr", "images_per_s", "val_recall@1", "val_mAP@R"):
        if key in row:
            parts.append(f"{key}={row[key]:.4g}")
    return " ".join(parts)


class _Log:
    def __init__(self, path: Path, append: bool):
        self.path = path
        if not append:
            path.write_text("", encoding="utf-8")

    def write(self, line: str) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
