"""``petkit train``: manifest -> runs/<name>/ (config.yaml, last.pt, best.pt, history.csv, train.log).

One epoch: P x K batches from the train split, batched augmentation on the device, forward
under autocast, loss in fp32, scaled backward + clip + step, per-batch schedule. After each
epoch the model embeds the val split (leave-one-out retrieval) and the val metric decides
the best checkpoint and early stopping. Epoch 0 is the untrained model's score.
"""

from __future__ import annotations

import csv
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
from petkit.data.augment import augment
from petkit.data.batches import ImageStore
from petkit.engine.engine import Engine
from petkit.engine.inference import embed_store
from petkit.engine.schedule import warmup_cosine
from petkit.errors import PetkitError
from petkit.evaluation.metrics import retrieval_metrics
from petkit.io import atomic_path, write_text
from petkit.models.backbones import build_backbone
from petkit.models.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from petkit.models.model import EmbeddingModel, build_model
from petkit.registry import BACKBONES, HEADS, LOSSES, MINERS, SAMPLERS

VAL_METRICS = ("recall@1", "recall@5", "mAP", "mAP@R", "R-precision", "precision@1")


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
    """Fail on unknown component names before any data is read."""
    for registry, spec in ((LOSSES, config.loss), (MINERS, config.miner), (SAMPLERS, config.data.sampler),
                           (BACKBONES, config.model.backbone), (HEADS, config.model.head)):
        if spec is not None:
            registry.get(spec.name)
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

    manifest = _read_train_manifest(config)
    train_rows = manifest.select("train") if manifest.has(mf.SPLIT) else manifest
    val_rows = manifest.select("val") if manifest.has(mf.SPLIT) else None
    identities = train_rows.identities()
    label_of = {name: i for i, name in enumerate(identities)}
    labels = torch.tensor([label_of[r[mf.IDENTITY]] for r in train_rows.rows])

    engine = Engine.create(config.train.device, config.train.precision, config.train.channels_last)
    reporter.setup(f"engine: {engine.describe()}")
    model, preprocessing = build_model(config.model, config.data.image_size, config.data.mean, config.data.std)
    miner = MINERS.build(config.miner) if config.miner else None
    loss_fn = LOSSES.build(config.loss, num_classes=len(identities), embedding_dim=model.embedding_dim, miner=miner)
    model = engine.prepare(model)
    loss_fn = loss_fn.to(engine.device)

    sampler = SAMPLERS.build(config.data.sampler, labels=labels.tolist(), seed=config.train.seed)
    steps_per_epoch = len(sampler)
    optimizer = _optimizer(model, loss_fn, config)
    scheduler = warmup_cosine(
        optimizer, config.train.epochs * steps_per_epoch,
        int(config.optim.warmup_epochs * steps_per_epoch), config.optim.min_lr_ratio,
    )
    generator = torch.Generator().manual_seed(config.train.seed)
    state = _State()
    if resume:
        state = _restore(last_path, config, model, loss_fn, optimizer, scheduler, engine, generator)

    train_store = _store(train_rows, config, reporter, "train images")
    val_store = _store(val_rows, config, reporter, "val images") if val_rows is not None and len(val_rows) else None
    val_labels = np.array(val_rows.values(mf.IDENTITY)) if val_store is not None else None

    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", dump_yaml(config))
    log = _Log(run_dir / "train.log", append=resume)
    log.write(f"petkit train: {len(train_rows)} train images of {len(identities)} identities; "
              f"val: {len(val_rows) if val_store is not None else 0} images; engine {engine.describe()}")

    if state.epoch == 0 and val_store is not None:  # the untrained model's score
        row = {"epoch": 0, **_validate(model, val_store, val_labels, engine)}
        state.history.append(row)
        reporter.epoch_end(row)
        log.write(_format_row(row))

    stopped_early = False
    for epoch in range(state.epoch + 1, config.train.epochs + 1):
        reporter.epoch_start(epoch, config.train.epochs, steps_per_epoch)
        sampler.set_epoch(epoch)
        row = {"epoch": epoch, **_train_epoch(model, loss_fn, train_store, sampler, labels, optimizer, scheduler, engine, config, generator, reporter)}
        if val_store is not None:
            row.update(_validate(model, val_store, val_labels, engine))
        state.history.append(row)
        state.epoch = epoch
        improved = _update_best(state, row, config)
        payload = _payload(state, optimizer, scheduler, engine, loss_fn, generator)
        fingerprint = save_checkpoint(last_path, model, config, preprocessing, **payload)
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


def _train_epoch(model, loss_fn, store, sampler, labels, optimizer, scheduler, engine, config, generator, reporter) -> dict:
    model.train()
    loss_fn.train()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    total_loss, total_images, started = 0.0, 0, time.perf_counter()
    losses = []
    for indices, batch in store.batches(sampler):
        images = augment(engine.images(batch), config.data.augment, generator)
        if engine.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batch_labels = labels[indices].to(engine.device, non_blocking=True)
        with engine.autocast():
            embeddings = model(images)
        loss = loss_fn(embeddings.float(), batch_labels)
        if not torch.isfinite(loss):
            raise PetkitError(
                f"training diverged: loss is {loss.item()} at epoch {sampler.epoch}",
                "lower optim.lr, keep train.grad_clip set, or try --precision fp32",
            )
        engine.backward_step(loss, optimizer, parameters, config.train.grad_clip)
        scheduler.step()
        losses.append(loss.detach())
        total_images += len(indices)
        if len(losses) % 5 == 1:  # .item() syncs the device: not every step
            total_loss = float(torch.stack(losses).mean())
        reporter.step(total_loss, optimizer.param_groups[0]["lr"], total_images / (time.perf_counter() - started))
    seconds = time.perf_counter() - started
    return {
        "train_loss": float(torch.stack(losses).mean()) if losses else float("nan"),
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": total_images / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
    }


def _validate(model: EmbeddingModel, store: ImageStore, labels: np.ndarray, engine: Engine) -> dict:
    vectors = embed_store(model, store, engine)
    result = retrieval_metrics(vectors, labels, vectors, labels, ks=(1, 5), leave_one_out=True)
    return {f"val_{k}": result.metrics.get(k, float("nan")) for k in VAL_METRICS}


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


def _optimizer(model: torch.nn.Module, loss_fn: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)  # no decay on biases and norms
    groups = [
        {"params": decay, "weight_decay": config.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "weight_decay": 0.0, "lr": config.optim.loss_lr or config.optim.lr})
    return torch.optim.AdamW(groups, lr=config.optim.lr)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _payload(state: _State, optimizer, scheduler, engine: Engine, loss_fn, generator) -> dict:
    return {
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


def _restore(path: Path, config: Config, model, loss_fn, optimizer, scheduler, engine: Engine, generator) -> _State:
    saved = read_checkpoint(path)
    if saved["config"]["model"] != to_dict(config)["model"] or saved["config"]["loss"] != to_dict(config)["loss"]:
        raise PetkitError(
            f"cannot resume {path}: the model or loss in the config differs from the one it was trained with",
            "resume with the run's own config.yaml (only train.* settings may change)",
        )
    load_model_state(model, saved["model"], str(path))
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
