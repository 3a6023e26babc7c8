"""``petkit train``: manifest -> runs/<name>/ (config.yaml, last.pt, best.pt, history.csv, train.log).

:class:`Trainer` holds the loop: ``fit`` = set up, validate the untrained model (epoch 0), then per
epoch ``train_epoch`` (P x K batches, batched augmentation on the device, forward under
autocast, loss in fp32, scaled backward + clip + step, per-step schedule) and ``validate``
(leave-one-out retrieval on the val split through the one embedder). ``train.val_metric``
decides the best epoch. Everything the run writes or shows is a callback
(petkit.engine.callbacks): checkpoints, history.csv, train.log, early stopping, TensorBoard
and whatever the caller passes (the CLI's progress display).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from petkit.config import Config, dump_yaml, resolve, to_dict
from petkit.data import manifest as mf
from petkit.data.batches import ImageStore
from petkit.engine.callbacks import LOGGERS, Callback, Checkpointer, EarlyStopping, History, StepLog, TrainLog
from petkit.engine.embedder import TorchEmbedder, embed_store
from petkit.engine.engine import Engine
from petkit.errors import PetkitError
from petkit.evaluation.metrics import retrieval_metrics
from petkit.interfaces import BatchSampler, Loss
from petkit.io import LOCK_NAME, RunLock, write_text
from petkit.models.backbones import timm_model_name
from petkit.models.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from petkit.models.model import EmbeddingModel, build_model
from petkit.registry import AUGMENTATIONS, BACKBONES, HEADS, LOSSES, MINERS, OPTIMIZERS, SAMPLERS, SCHEDULES

# files a run folder holds: a folder with only these and no checkpoint is a run that never finished
# an epoch (killed while loading or training its first epoch) and is started anew
RUN_FILES = ("config.yaml", "train.log", "history.csv", "steps.csv", "tensorboard", "report", LOCK_NAME)
# mean distance of the val embeddings (unit vectors) from their centroid below which they carry no
# identity. Measured after one epoch on 24 synthetic identities at 64 px: the collapsed scratch_mobilenet
# (features 1e-8) 9.4e-4; the repaired one 0.026 (its recall@1 rose), scratch_resnet 0.16, scratch_convnext 0.47
COLLAPSED_SPREAD = 5e-3
VAL_METRICS = ("recall@1", "recall@5", "mAP", "mAP@R", "R-precision", "precision@1", "accuracy", "pair_accuracy")
PARAMETER_GROUPS = ("backbone", "head", "loss")
# what a run fills in for the settings left to the weights (null in the config): on pretrained weights
# the backbone learns at a tenth of the head's rate and its batch norms keep the weights' statistics.
# Measured on unseen dogs (benchmarks/bench_pretrained.py, docs/catalogue.md): with both, ImageNet
# EfficientNet-Lite0 gains Recall@1 from the first epoch; with neither (the scratch recipe), a P x K
# batch of 64 dog faces re-estimates every batch norm and val Recall@1 falls from 0.893 to 0.827
PRETRAINED_RECIPE = {"batch_norm": "frozen", "backbone_lr_ratio": 0.1, "head_init": "features"}
SCRATCH_RECIPE = {"batch_norm": "train", "backbone_lr_ratio": 1.0, "head_init": "random"}


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    best_metric: float | None
    stopped_early: bool
    engine: str
    val_metric: str = "recall@1"
    stop_reason: str = ""
    warnings: list[str] = field(default_factory=list)  # e.g. training made the model worse than untrained


@dataclass
class TrainState:
    """What a resumed run continues from (saved in last.pt)."""

    epoch: int = 0
    best_metric: float | None = None
    bad_epochs: int = 0
    global_step: int = 0  # optimiser steps so far
    history: list[dict] = field(default_factory=list)
    improved: bool = False  # the last validated epoch is the best so far


# ---------------------------------------------------------------------------------------
# configuration: the API behind the CLI's flags


def backbone_component(name: str) -> dict[str, Any]:
    """``--backbone NAME``: a registered backbone, else a timm model name (as the timm backbone's ``model``, ``pretrained: auto``)."""
    if name in BACKBONES:
        return {"name": name}
    return {"name": "timm", "args": {"model": name, "pretrained": "auto"}}


def train_config(config_path: str | Path | None = None, overrides: Sequence[str] = (), flags: dict[str, Any] | None = None,
                 backbone: str | None = None, resume: bool = False) -> Config:
    """Defaults <- YAML <- typed ``flags`` (dotted key -> value) <- ``backbone`` <- dotted ``overrides``.

    With ``resume`` and no ``config_path`` the run's own config.yaml is the base (``flags`` must name the run).
    """
    flags = dict(flags or {})
    if backbone:
        flags["model.backbone"] = backbone_component(backbone)
    if resume and config_path is None:
        name = flags.get("name")
        if not name:
            raise PetkitError("--resume needs --name (the run to continue)", "for example: petkit train --resume --name my-run")
        config_path = Path(flags.get("output_dir") or "runs") / str(name) / "config.yaml"
        if not config_path.is_file():
            raise PetkitError(f"nothing to resume: {config_path} does not exist", "start the run without --resume")
    return resolve(config_path, overrides, flags=flags)


def check_components(config: Config) -> None:
    """Fail on unknown component names and settings before any data is read."""
    for registry, spec in ((LOSSES, config.loss), (MINERS, config.miner), (SAMPLERS, config.data.sampler),
                           (BACKBONES, config.model.backbone), (HEADS, config.model.head), (AUGMENTATIONS, config.data.augment),
                           (OPTIMIZERS, config.optim.optimizer), (SCHEDULES, config.optim.schedule)):
        if spec is not None:
            registry.validate(spec)
    unknown_groups = sorted(set(config.optim.group_lr) - set(PARAMETER_GROUPS))
    if unknown_groups:
        raise PetkitError(f"optim.group_lr has unknown groups {unknown_groups}", f"use {', '.join(PARAMETER_GROUPS)}")
    if config.train.val_metric not in VAL_METRICS:
        raise PetkitError(f"train.val_metric '{config.train.val_metric}' is not one of {', '.join(VAL_METRICS)}")
    unknown_loggers = sorted(set(config.train.loggers) - set(LOGGERS))
    if unknown_loggers:
        raise PetkitError(f"train.loggers has unknown logger(s) {', '.join(unknown_loggers)}", f"use {', '.join(LOGGERS)}")
    if config.model.backbone.name == "timm":
        timm_model_name(str(config.model.backbone.args.get("model", "resnet18")))  # unknown names fail before any data is read


def train(config: Config, resume: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train one run (the Python API of ``petkit train``)."""
    return Trainer(config, resume=resume, callbacks=callbacks).fit()


# ---------------------------------------------------------------------------------------
# the trainer


class Trainer:
    def __init__(self, config: Config, resume: bool = False, callbacks: Sequence[Callback] = ()):
        check_components(config)
        self.config, self.resume = config, resume
        self.run_dir = config.run_dir
        self.last_path, self.best_path = self.run_dir / "last.pt", self.run_dir / "best.pt"
        self.lock = RunLock(self.run_dir, "petkit train")  # before anything is read: two runs never share a folder
        try:
            self.restarted = self._check_run_dir()
        except BaseException:
            self.lock.release()
            raise
        # the run's own files first, so the caller's callbacks see them written
        self.callbacks: list[Callback] = [TrainLog(self.run_dir / "train.log", append=resume), StepLog(self.run_dir / "steps.csv", append=resume),
                                          History(self.run_dir / "history.csv", tuple(f"val_{k}" for k in VAL_METRICS)),
                                          Checkpointer(self.last_path, self.best_path)]
        if config.train.early_stopping_patience is not None:
            self.callbacks.append(EarlyStopping(config.train.early_stopping_patience))
        self.callbacks += [LOGGERS[name](self.run_dir) for name in config.train.loggers]
        self.callbacks += list(callbacks)
        self.state = TrainState()
        self.stop_reason = ""
        self.warnings: list[str] = []
        self.step_losses: list[tuple[int, torch.Tensor, float]] = []  # this epoch's (batch, loss, lr), for steps.csv
        self.resume_note = ""  # what changed since the run checkpoint (recorded in train.log and history)

    # ---- hooks

    def emit(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def message(self, text: str) -> None:
        self.emit("on_message", text)

    def stop(self, reason: str) -> None:
        """Ask the loop to end after this epoch (callbacks call it, e.g. early stopping)."""
        self.stop_reason = reason

    @property
    def has_validation(self) -> bool:
        return self.val_store is not None

    # ---- setup

    def _check_run_dir(self) -> bool:
        """True when the folder holds a run that never saved a checkpoint (it is started anew)."""
        if self.resume and not self.last_path.is_file():
            raise PetkitError(f"nothing to resume: {self.last_path} does not exist",
                              "start the run without --resume (a run folder without a checkpoint is started anew)")
        if self.resume:
            return False
        entries = [e for e in self.run_dir.iterdir() if not (e.name.startswith(".") and e.name.endswith(".tmp"))]
        if self.last_path.exists() or self.best_path.exists():
            raise PetkitError(f"run folder {self.run_dir} already exists", "pass --resume to continue it, or choose another --name")
        foreign = sorted(e.name for e in entries if e.name not in RUN_FILES)
        if foreign:
            raise PetkitError(f"run folder {self.run_dir} already exists and holds files petkit did not write ({', '.join(foreign[:3])})",
                              "choose another --name, or move those files away")
        return any(e.name != LOCK_NAME for e in entries)

    def setup(self) -> None:
        config = self.config
        _seed_everything(config.train.seed)
        if self.restarted:
            self.message(f"run folder {self.run_dir} holds no checkpoint (the run stopped before its first epoch ended): starting it anew")
        manifest = _read_train_manifest(config).labelled()
        rows = manifest.select("train") if manifest.has(mf.SPLIT) else manifest
        val_rows = manifest.select("val").real() if manifest.has(mf.SPLIT) else None
        self.identities = rows.real().identities()  # a fake imitates a real identity: never a class of its own
        label_of = {name: i for i, name in enumerate(self.identities)}

        self.engine = Engine.create(config.train.device, config.train.precision, config.train.channels_last)
        self.message(f"engine: {self.engine.describe()}")
        self.model = build_model(config.model, config.data.image_size, config.data.mean, config.data.std)
        self._apply_recipe()
        self.loss_fn: Loss = LOSSES.build(config.loss, num_classes=len(self.identities), embedding_dim=self.model.embedding_dim)
        # which rows to train on follows from what the loss declares, before the sampler is built
        rows, self.is_fake = self._train_rows(rows, label_of)
        self.train_rows = rows
        self.data_digest = _data_digest(rows, val_rows)
        self.labels = torch.tensor([label_of[r[mf.IDENTITY]] for r in rows.rows])
        self.sampler: BatchSampler = SAMPLERS.build(config.data.sampler, labels=self.labels.tolist(), seed=config.train.seed)
        self._choose_miner()
        if config.train.val_metric == "accuracy" and self.loss_fn.classifier is None:
            raise PetkitError(f"train.val_metric 'accuracy' needs a classification loss; '{config.loss.name}' has no classifier",
                              "use recall@1, or a loss such as cross_entropy, arcface or cosface")
        self.augmentation = AUGMENTATIONS.build(config.data.augment, image_size=config.data.image_size)
        self.model = self.engine.prepare(self.model)
        self.loss_fn = self.loss_fn.to(self.engine.device)

        self.train_store = self._store(rows, "train images")
        self.val_store = self._store(val_rows, "val images") if val_rows is not None and len(val_rows) else None
        if config.train.head_init == "features" and not self.resume:
            self._start_head()

        self.steps_per_epoch = -(-len(self.sampler) // config.train.accumulate_steps)  # optimiser steps
        self.optimizer = OPTIMIZERS.build(config.optim.optimizer, params=_parameter_groups(self.model, self.loss_fn, config), lr=config.optim.lr)
        self.scheduler = SCHEDULES.build(config.optim.schedule, optimizer=self.optimizer, steps_per_epoch=self.steps_per_epoch,
                                         epochs=config.train.epochs)
        self.ema = _ema(self.model, config.train.ema_decay)
        self.generator = torch.Generator().manual_seed(config.train.seed)
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.resume:
            self._restore()

        self.val_labels = np.array(val_rows.values(mf.IDENTITY)) if self.val_store is not None else None
        self.val_targets = np.array([label_of.get(n, -1) for n in self.val_labels]) if self.val_store is not None else None  # -1: unseen

        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.run_dir / "config.yaml", dump_yaml(config))
        self.message(f"petkit train: {len(rows)} train images of {len(self.identities)} identities; "
                     f"val: {len(val_rows) if self.val_store is not None else 0} images; engine {self.engine.describe()}")

    def _apply_recipe(self) -> None:
        """Say where the backbone's weights came from, and fill the settings left to them (null in the config).

        The values land in the config, so config.yaml and the checkpoint say what ran and a resumed run
        keeps them whatever the network does then. With pretrained weights (measured in
        benchmarks/bench_pretrained.py, see docs/catalogue.md): the weights' input size, and
        :data:`PRETRAINED_RECIPE`; without: 112 px and the settings as given.
        """
        config, model = self.config, self.model
        config.data.image_size = model.card.image_size
        recipe = PRETRAINED_RECIPE if model.pretrained else SCRATCH_RECIPE
        if config.train.batch_norm == "auto":
            config.train.batch_norm = recipe["batch_norm"]
        if config.optim.backbone_lr_ratio is None:
            config.optim.backbone_lr_ratio = recipe["backbone_lr_ratio"]
        if config.train.head_init == "auto":
            config.train.head_init = recipe["head_init"]
        requested = config.model.backbone.args.get("pretrained")
        if model.pretrained:
            backbone_lr = config.optim.group_lr.get("backbone", config.optim.lr * config.optim.backbone_lr_ratio)
            self.message(f"backbone {model.initialisation}: fine-tuning recipe: {model.card.image_size} px with the weights' mean/std, "
                         f"backbone lr {backbone_lr:g} (head {config.optim.group_lr.get('head', config.optim.lr):g}), "
                         f"batch norm {config.train.batch_norm}, head init {config.train.head_init}")
        elif model.initialisation.startswith("random ("):  # pretrained: auto found no weights
            text = (f"warning: the backbone starts from random weights: {model.initialisation[len('random ('):-1]}; "
                    "training from scratch (set model.backbone.args.weights: FILE to use a downloaded file)")
            self.warnings.append(text)
            self.message(text)
        elif requested is False or requested is None:
            self.message("backbone from random weights (pretrained: false)")
        self.initialisation = model.initialisation

    def _start_head(self) -> None:
        from petkit.engine.head_init import start_head_from_features

        if not any(True for _ in self.model.head.parameters()):
            return  # an identity head: the embedding is the features already
        if self.model.start_linear is None:
            self.message(f"head '{self.config.model.head.name}' cannot start from the backbone's features "
                         "(an mlp needs layers: 2, no batch_norm, hidden_dim >= 2 x embedding_dim): it starts random")
            return
        self.message(start_head_from_features(self.model, self.train_store, self.engine, self.model.start_linear))

    def _train_rows(self, rows: mf.Manifest, label_of: dict) -> tuple[mf.Manifest, torch.Tensor | None]:
        real = rows.real()
        fakes = len(rows) - len(real)
        if not self.loss_fn.needs_fake:
            if fakes:  # a fake of X labelled X would teach the model that forgeries match
                self.message(f"{fakes} fake train images left out: loss '{self.config.loss.name}' does not use them")
            return real, None
        usable = mf.Manifest(rows.root, [r for r in rows.rows if r[mf.IDENTITY] in label_of], rows.columns)
        flags = torch.tensor([v == "1" for v in usable.values(mf.IS_FAKE)], dtype=torch.bool)
        if not bool(flags.any()):
            where = "has no is_fake column" if not rows.has(mf.IS_FAKE) else "marks no train image as fake (is_fake=1)"
            raise PetkitError(
                f"loss '{self.config.loss.name}' pushes fake images away, but manifest {self.config.data.manifest} {where}",
                "put each identity's fakes in <identity>/fake/ and run 'petkit prepare', or add an is_fake column (0/1) to the manifest",
            )
        if bool(flags.all()):
            raise PetkitError(f"loss '{self.config.loss.name}': every train image is marked fake; it needs real images as anchors")
        return usable, flags

    def _choose_miner(self) -> None:
        """The configured miner; with a pair-layout sampler the pairs are the batch's (0, 1), (2, 3), ..."""
        config, loss, sampler = self.config, self.loss_fn, self.sampler
        if sampler.adjacent_pairs:
            if config.miner is not None and config.miner.name != "adjacent_pairs":
                raise PetkitError(f"the {config.data.sampler.name} sampler lays out pairs for the adjacent_pairs miner, not '{config.miner.name}'",
                                  "drop --miner, or use the pk sampler for mined pairs")
            if loss.miner_kind != "pair":
                raise PetkitError(f"the {config.data.sampler.name} sampler makes pairs, but loss '{config.loss.name}' does not train on pairs",
                                  "use --loss contrastive with it")
            loss.use_miner(MINERS.build(config.miner or {"name": "adjacent_pairs"}))
        elif config.miner is not None:
            if loss.miner_kind is None:
                raise PetkitError(f"loss '{config.loss.name}' does not use a miner, but miner '{config.miner.name}' is set",
                                  "drop --miner (or set miner: null); miners serve triplet, quadruplet and contrastive")
            loss.use_miner(MINERS.build(config.miner))

    def _store(self, rows: mf.Manifest, what: str) -> ImageStore:
        self.emit("on_loading", what, len(rows) if self.config.data.cache_images else 0)
        return ImageStore(rows, self.config.data.image_size, self.config.data.cache_images, self.config.data.num_workers,
                          lambda n: self.emit("on_loaded", n))

    # ---- the loop

    def fit(self) -> TrainResult:
        try:
            return self._fit()
        finally:
            self.lock.release()

    def _fit(self) -> TrainResult:
        self.setup()
        self.emit("on_fit_start")
        if self.state.epoch == 0 and self.has_validation:  # the untrained model's score
            self._end_epoch({"epoch": 0, **self.validate()})
        for epoch in range(self.state.epoch + 1, self.config.train.epochs + 1):
            self.emit("on_epoch_start", epoch, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            row = {"epoch": epoch, **self.train_epoch()}
            if self.resume_note:
                row["note"], self.resume_note = self.resume_note, ""
            if self.has_validation:
                row.update(self.validate(trained=True))
            self.scheduler.epoch_end(row.get(f"val_{self.config.train.val_metric}"))
            self.state.epoch = epoch
            self._end_epoch(row)
            if self.stop_reason:
                break
        self._compare_with_untrained()
        result = TrainResult(self.run_dir, self.best_path, self.last_path, self.state.history, self.state.best_metric,
                             bool(self.stop_reason), self.engine.describe(), self.config.train.val_metric, self.stop_reason,
                             list(self.warnings))
        self.emit("on_fit_end", result)
        return result

    def _compare_with_untrained(self) -> None:
        """Say so when no trained epoch beat the untrained model: best.pt is then worse than no training."""
        metric = f"val_{self.config.train.val_metric}"
        untrained = next((r.get(metric) for r in self.state.history if r["epoch"] == 0), None)
        best = self.state.best_metric
        if untrained is None or best is None or np.isnan(untrained) or best >= untrained:
            return
        text = (f"warning: every trained epoch scored below the untrained model ({self.config.train.val_metric} "
                f"{best:.4f} at best vs {untrained:.4f} at epoch 0): training made the model worse; "
                "lower optim.lr, check the loss and sampler, or start from pretrained weights")
        self.warnings.append(text)
        self.message(text)

    def _end_epoch(self, row: dict) -> None:
        row = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()}  # plain data in checkpoints
        self.state.history.append(row)
        self.state.improved = self._update_best(row) if row["epoch"] > 0 else False
        self.emit("on_epoch_end", row)

    def _update_best(self, row: dict) -> bool:
        value = row.get(f"val_{self.config.train.val_metric}")
        if value is None or np.isnan(value):
            return True  # no validation: the newest checkpoint is the best we know
        best = self.state.best_metric
        if best is None or value > best:
            significant = best is None or value > best + self.config.train.early_stopping_min_delta
            self.state.best_metric = float(value)
            self.state.bad_epochs = 0 if significant else self.state.bad_epochs + 1
            return True
        self.state.bad_epochs += 1
        return False

    def train_epoch(self) -> dict:
        self.model.train()
        if self.config.train.batch_norm == "frozen":
            _freeze_batch_norm_statistics(self.model.backbone)
        self.loss_fn.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, total_images, started = [], 0, time.perf_counter()
        running = 0.0
        batches = len(self.sampler)
        seen_positive = False  # some batch held two images of one identity
        self.step_losses = []
        for position, (indices, batch) in enumerate(self.train_store.batches(self.sampler)):
            losses.append(self.train_step(indices, batch, position, position == batches - 1))
            self.step_losses.append((position + 1, losses[-1], self.optimizer.param_groups[0]["lr"]))
            total_images += len(indices)
            seen_positive = seen_positive or bool(torch.unique(self.labels[indices], return_counts=True)[1].max() > 1)
            if len(losses) % 5 == 1:  # .item() syncs the device: not every step
                running = float(torch.stack(losses).mean())
            self.emit("on_step_end", running, self.optimizer.param_groups[0]["lr"], total_images / (time.perf_counter() - started))
        seconds = time.perf_counter() - started
        if not seen_positive and self.loss_fn.classifier is None:
            raise PetkitError(
                f"training cannot learn: no batch of the epoch held two images of one identity, so loss '{self.config.loss.name}' "
                "had no positive pair (its value was 0 and nothing was saved)",
                "give the sampler k >= 2 (data.sampler.args.k=4), or use a classification loss such as arcface")
        return {
            "train_loss": float(torch.stack(losses).mean()) if losses else float("nan"),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": total_images / seconds if seconds > 0 else 0.0,
            "seconds": seconds,
        }

    def train_step(self, indices: list[int], batch: torch.Tensor, position: int, last: bool) -> torch.Tensor:
        """One batch: augment, forward under autocast, loss in fp32, (accumulated) optimiser step."""
        engine = self.engine
        images = self.augmentation(engine.images(batch), self.generator)
        if engine.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        extra = {"is_fake": self.is_fake[indices].to(engine.device)} if self.is_fake is not None else {}
        with engine.autocast():
            embeddings = self.model(images)
        loss = self.loss_fn(embeddings.float(), self.labels[indices].to(engine.device, non_blocking=True), **extra)
        if not torch.isfinite(loss):
            raise PetkitError(f"training diverged: loss is {loss.item()}", "lower optim.lr, keep train.grad_clip set, or try --precision fp32")
        accumulate = self.config.train.accumulate_steps
        engine.backward(loss / accumulate)
        if (position + 1) % accumulate == 0 or last:
            engine.step(self.optimizer, self.parameters, self.config.train.grad_clip)
            self.scheduler.step()
            self.state.global_step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.state.global_step)
        return loss.detach()

    @property
    def eval_model(self) -> EmbeddingModel:
        """What is validated and saved: the weight average with EMA, else the weights."""
        return self.ema.module if self.ema is not None else self.model

    def validate(self, trained: bool = False) -> dict:
        vectors = embed_store(TorchEmbedder(self.eval_model, self.engine), self.val_store)
        if trained:
            self._refuse_collapse(vectors)
        result = retrieval_metrics(vectors, self.val_labels, vectors, self.val_labels, ks=(1, 5), leave_one_out=True)
        row = {f"val_{k}": float(result.metrics.get(k, float("nan"))) for k in VAL_METRICS}
        row["val_accuracy"] = self._closed_set_accuracy(vectors)
        row["val_pair_accuracy"] = self._pair_accuracy(vectors)
        return row

    def _pair_accuracy(self, vectors: np.ndarray) -> float:
        """Balanced accuracy of every val pair (same / different identity) at train.pair_distance_threshold."""
        from petkit.evaluation.evaluators import distance_to_cosine
        from petkit.evaluation.metrics import balanced_accuracy_at_threshold, verification_pairs

        scores, same, _ = verification_pairs(vectors, self.val_labels, max_pairs=1_000_000, seed=self.config.train.seed)
        return balanced_accuracy_at_threshold(scores, same, distance_to_cosine(self.config.train.pair_distance_threshold))

    def _refuse_collapse(self, vectors: np.ndarray) -> None:
        """Stop when every val image embeds to (nearly) the same vector: such a model tells nobody apart."""
        if len(vectors) < 2:
            return
        spread = float(np.linalg.norm(vectors - vectors.mean(axis=0), axis=1).mean())
        if spread < COLLAPSED_SPREAD:
            text = (f"training stopped at epoch {self.state.epoch + 1}: the embeddings collapsed (the {len(vectors)} val images lie "
                    f"{spread:.1e} on average from their mean, on the unit sphere); the model maps every image to the same point")
            self.message(text)
            raise PetkitError(text, "lower optim.lr, check the backbone's initialisation and normalisation, or try another loss")

    @torch.no_grad()
    def _closed_set_accuracy(self, vectors: np.ndarray) -> float:
        """Accuracy of the loss's classifier on val images of identities seen in training (NaN otherwise)."""
        seen = self.val_targets >= 0
        if self.loss_fn.classifier is None or not seen.any():
            return float("nan")
        logits = self.loss_fn.classifier(torch.from_numpy(vectors[seen]).to(self.engine.device))
        return float((logits.argmax(1).cpu().numpy() == self.val_targets[seen]).mean())

    # ---- checkpoints

    def save_model(self, path: Path) -> None:
        """best.pt: the model card and the (averaged) weights, nothing to resume with."""
        save_checkpoint(path, self.eval_model, initialisation=self.initialisation)

    def save_run_checkpoint(self, path: Path) -> None:
        """last.pt: the model plus the resolved config and everything needed to resume exactly."""
        state = self.state
        training = {
            "epoch": state.epoch, "history": state.history, "best_metric": state.best_metric, "bad_epochs": state.bad_epochs,
            "global_step": state.global_step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "engine": self.engine.state_dict(), "loss": self.loss_fn.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "augment": self.generator.get_state()},
            "data_digest": self.data_digest,
        }
        if self.ema is not None:
            training["train_model"] = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_checkpoint(path, self.eval_model, to_dict(self.config), training, initialisation=self.initialisation)

    def _restore(self) -> None:
        path = self.last_path
        saved = read_checkpoint(path)
        config = saved.get("config") or {}
        current = to_dict(self.config)
        if config.get("model") != current["model"] or config.get("loss") != current["loss"]:
            raise PetkitError(
                f"cannot resume {path}: the model or loss in the config differs from the one it was trained with",
                "resume with the run's own config.yaml (only train.* settings may change)",
            )
        training = saved.get("training", saved)  # version 1 run checkpoints keep it at the top level
        digest = training.get("data_digest")
        if digest is not None and digest != self.data_digest:
            raise PetkitError(
                f"cannot resume {path}: the train or val images differ from those the run was trained on "
                f"(manifest {self.config.data.manifest}); its val metrics would compare different sets",
                "resume with the run's own manifest, or start a new run (--name) on the new one")
        changes = _changes(config, current)
        if changes:
            self.resume_note = "resumed with " + "; ".join(changes)
            self.message(f"resuming {path} at epoch {training['epoch']} with changed settings: {'; '.join(changes)}")
        load_model_state(self.model, training.get("train_model", saved["model"]), str(path))
        if self.ema is not None:
            if "train_model" not in training and "ema" not in training:
                raise PetkitError(f"cannot resume {path} with train.ema_decay set: the run was trained without EMA",
                                  "resume without changing train.ema_decay")
            load_model_state(self.ema.module, saved["model"], str(path))
        try:
            self.loss_fn.load_state_dict(training["loss"])
            self.optimizer.load_state_dict(training["optimizer"])
            self.scheduler.load_state_dict(training["scheduler"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # a loss whose parameters changed between versions
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise PetkitError(f"cannot resume {path}: its loss or optimiser state does not fit this run ({first})",
                              "the loss changed since the run was written (petkit upgraded?); start a new run, or embed with its best.pt") from exc
        self.engine.load_state_dict(training.get("engine", {}))
        torch.set_rng_state(training["rng"]["torch"])
        self.generator.set_state(training["rng"]["augment"])
        self.state = TrainState(training["epoch"], training["best_metric"], training["bad_epochs"],
                                int(training.get("global_step", training["epoch"] * self.steps_per_epoch)), list(training["history"]))


# ---------------------------------------------------------------------------------------
# helpers


def _read_train_manifest(config: Config) -> mf.Manifest:
    if not config.data.manifest:
        raise PetkitError("no training manifest given", "pass --manifest path/to/manifest.csv (from 'petkit prepare')")
    return mf.read_manifest(config.data.manifest)


def _data_digest(train_rows: mf.Manifest, val_rows: mf.Manifest | None) -> str:
    """What the run learns from and is scored on: a resume must see the same images with the same labels."""
    import hashlib

    digest = hashlib.sha256()
    for name, rows in (("train", train_rows), ("val", val_rows)):
        digest.update(name.encode())
        for row in (rows.rows if rows is not None else []):
            digest.update("\x1f".join((row[mf.PATH], row[mf.IDENTITY], row.get(mf.IS_FAKE, ""))).encode() + b"\x1e")
    return digest.hexdigest()[:16]


def _changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """'optim.lr 0.001 -> 0.01' for every setting that differs (the run's name and folder aside)."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        if path in ("name", "output_dir", "data.manifest"):  # the images themselves are compared by digest
            continue
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict) and path not in ("loss", "miner"):
            changes += _changes(old, new, path + ".")
        elif old != new:
            changes.append(f"{path} {old!r} -> {new!r}")
    return changes


def _ema(model: torch.nn.Module, decay: float | None):
    """timm's ModelEmaV3 (with its warmup: early averages are not dominated by the random init)."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True)


def _parameter_groups(model: EmbeddingModel, loss_fn: torch.nn.Module, config: Config) -> list[dict]:
    """Per module (backbone, head, loss), timm's decay / no-decay split (biases, norms, GeM p: no decay)
    with the module's learning rate; loss parameters (class centres are directions) never decay."""
    from timm.optim import param_groups_weight_decay

    groups = []
    ratios = {"backbone": config.optim.backbone_lr_ratio or 1.0}
    for name, module in {"backbone": model.backbone, "head": model.head, "loss": loss_fn}.items():
        lr = config.optim.group_lr.get(name, config.optim.lr * ratios.get(name, 1.0))
        decay = 0.0 if name == "loss" else config.optim.weight_decay
        for group in param_groups_weight_decay(module, decay):
            suffix = "_no_decay" if group["weight_decay"] == 0 and decay else ""
            groups.append({**group, "lr": lr, "name": f"{name}{suffix}"})
    return groups


def _freeze_batch_norm_statistics(module: torch.nn.Module) -> None:
    """Batch norms in inference mode: normalised by the weights' running statistics, which no batch
    updates (their scale and shift still learn)."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)):
            layer.eval()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
