"""The contracts a component meets; the registries check what every factory returns against them.

One small interface per registry (OML's ``IExtractor`` / ``ITripletsMiner`` style). Built-in
components subclass the base classes here; a plugin may subclass them too (and inherit the
defaults) or provide the declared attributes itself. Either way :meth:`Interface.check` runs on
the object a factory returned, so a plugin that returns the wrong thing fails with one line
naming the component, its package and the missing attribute, not with a traceback deep in a loop.

- ``Backbone`` / ``Head``: a module plus the facts the model card needs (feature width, input
  statistics; embedding width), so nothing is measured with a dummy forward pass;
- ``Loss``: an ``nn.Module`` called as ``loss(embeddings, labels[, is_fake=])``; declares
  ``needs_fake`` (it is called with ``is_fake`` and trains on fake rows), ``classifier``
  (embeddings -> class logits, or None) and ``miner_kind`` (the miner it mines with, or None);
- ``TripletMiner`` / ``PairMiner``: ``(distances, labels) -> index tensors``, with ``kind``;
- ``BatchSampler``: index lists per batch, ``set_epoch``, ``__len__``, the DDP shard
  (``rank``, ``world_size``) and ``adjacent_pairs`` (a pair layout for the adjacent_pairs miner);
- ``Evaluator``: ``(queries, gallery) -> [metric dicts]``;
- ``SubmissionWriter``: ``(request) -> Submission``, with ``needs_pairs``;
- ``DatasetSource``: ``detect(path)``, ``scan(path) -> Listing`` (rows + files skipped on sight),
  ``labelled`` (its rows carry identities, so ``prepare`` can use it);
- ``Embedder``: ``card`` (image size, fingerprint, ...) and ``__call__(uint8 batch) -> vectors``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from petkit.errors import PetkitError

if TYPE_CHECKING:
    from petkit.models.card import ModelCard

MINER_KINDS = ("triplet", "pair")


# ---------------------------------------------------------------------------------------
# models


@dataclass
class Backbone:
    """A feature extractor: ``module(images) -> [B, num_features]`` and the statistics its weights expect."""

    module: nn.Module
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int | None = None  # the image side the loaded weights were trained at (None: no weights)
    pretrained: bool = False  # trained weights were loaded (hub, cache or file): the fine-tuning recipe applies
    initialisation: str = "random"  # where the weights came from, for train.log and the checkpoint


@dataclass
class Head:
    """A projection ``module(features) -> [B, embedding_dim]`` (L2 normalisation comes after it)."""

    module: nn.Module
    embedding_dim: int
    # set the weights so that module(x) == W @ (x - centre) at the start (W: [embedding_dim, in_features]);
    # None: the head cannot start from a linear map (it keeps its random init). Used to start a head on
    # pretrained weights from the backbone's own features (petkit.engine.head_init)
    start_linear: Callable[[torch.Tensor, torch.Tensor], None] | None = None


# ---------------------------------------------------------------------------------------
# training components


class Loss(nn.Module):
    """Base class of every loss. Subclasses call ``super().__init__()`` first."""

    needs_fake: ClassVar[bool] = False
    miner_kind: ClassVar[str | None] = None  # "triplet" | "pair": mines with self.miner

    def __init__(self) -> None:
        super().__init__()
        self.classifier: nn.Module | None = None  # replaced by a module in classification losses
        self.miner: Miner | None = None

    def use_miner(self, miner: Miner) -> None:
        """Mine with ``miner`` (the configured one, or the sampler's pair layout)."""
        if self.miner_kind is None:
            raise PetkitError(f"loss {type(self).__name__} does not use a miner, but one is set",
                              "drop --miner (or set miner: null); miners serve triplet, quadruplet and contrastive")
        if miner.kind != self.miner_kind:
            raise PetkitError(
                f"loss {type(self).__name__} needs a {self.miner_kind} miner, got a {miner.kind} miner ({type(miner).__name__})",
                f"pass --miner with a {self.miner_kind} miner ('petkit plugins list --kind miners' shows each one's kind)",
            )
        self.miner = miner


class Miner(abc.ABC):
    kind: ClassVar[str]

    @abc.abstractmethod
    def __call__(self, distances: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


class TripletMiner(Miner):
    """``(distances, labels) -> (anchors, positives, negatives)``."""

    kind = "triplet"


class PairMiner(Miner):
    """``(distances, labels) -> (a1, p, a2, n)``: positive pairs (a1, p), negative pairs (a2, n)."""

    kind = "pair"


class BatchSampler(abc.ABC):
    """Lists of dataset indices, one per batch; the rank's shard of an epoch under DDP."""

    adjacent_pairs: ClassVar[bool] = False  # True: items (0, 1), (2, 3), ... of a batch are pairs
    rank: int = 0
    world_size: int = 1

    @abc.abstractmethod
    def __iter__(self) -> Iterator[list[int]]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def set_epoch(self, epoch: int) -> None: ...


# ---------------------------------------------------------------------------------------
# evaluation, submissions, data, inference


class Evaluator(abc.ABC):
    """``(queries, gallery or None for leave-one-out) -> [{name, value, protocol, ...sizes}]``."""

    @abc.abstractmethod
    def __call__(self, queries, gallery) -> list[dict]: ...


class SubmissionWriter(abc.ABC):
    """``(petkit.submit.writers.Request) -> Submission``; ``needs_pairs``: it answers a pairs file."""

    needs_pairs: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, request): ...


@dataclass
class Candidate:
    """One file a dataset source lists: where it is, whom it shows, and extra manifest columns."""

    path: Path  # absolute
    identity: str
    source: str  # path relative to the source root, as the user knows it
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Listing:
    """What a dataset source found: its files (``root`` is where relative paths start) and those skipped on sight."""

    root: Path
    candidates: list[Candidate]
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}


class DatasetSource(abc.ABC):
    """Reads one layout of photos (a manifest, identity folders, a challenge's layout, ...)."""

    labelled: ClassVar[bool] = True  # rows carry identities (prepare can train on them)
    priority: ClassVar[int] = 0  # detection asks the highest first (a specific layout before "any folder")
    empty_hint: ClassVar[str] = "check the folder"

    @abc.abstractmethod
    def detect(self, path: Path) -> bool:
        """Is ``path`` in this source's layout? (only asked when no --format names a source)"""

    @abc.abstractmethod
    def scan(self, path: Path) -> Listing: ...

    def read(self, path: Path):
        """The listing as a :class:`petkit.data.manifest.Manifest` (paths relative to the listing's root)."""
        from petkit.data import manifest as mf

        listing = self.scan(path)
        if not listing.candidates:
            raise PetkitError(f"no images found in {path}", self.empty_hint)
        rows = [{mf.PATH: c.source, mf.IDENTITY: c.identity, **c.extra} for c in listing.candidates]
        extra = sorted({key for c in listing.candidates for key in c.extra})
        return mf.Manifest(listing.root.resolve(), rows, [mf.PATH, mf.IDENTITY, *extra])


class Embedder(abc.ABC):
    """A model that turns uint8 image batches into L2-normalised float32 vectors."""

    card: ModelCard

    @property
    def image_size(self) -> int:
        return self.card.image_size

    @property
    def fingerprint(self) -> str:
        return self.card.fingerprint

    @abc.abstractmethod
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """uint8 [B, 3, S, S] RGB -> float32 [B, D], L2-normalised."""

    @abc.abstractmethod
    def describe(self) -> str: ...


# ---------------------------------------------------------------------------------------
# the checks the registries run


@dataclass(frozen=True)
class Interface:
    """What a factory of one registry must return: an instance of ``base``, or an object with ``attributes``.

    ``base=None``: no base class to inherit from (an augmentation is any callable).
    """

    name: str
    base: type | None
    attributes: tuple[str, ...] = ()
    callable: bool = False
    module: bool = False  # must be an nn.Module
    values: dict[str, tuple] = field(default_factory=dict)  # attribute -> allowed values

    def check(self, obj: Any, where: str) -> Any:
        if self.module and not isinstance(obj, nn.Module):
            raise self._error(where, f"returned {type(obj).__name__}, not a torch.nn.Module")
        if self.base is None or not isinstance(obj, self.base):
            if self.base is not None and not self.attributes:
                raise self._error(where, f"returned {type(obj).__name__}, not {self.base.__module__}.{self.base.__name__}")
            if self.callable and not callable(obj):
                raise self._error(where, f"returned {type(obj).__name__}, which is not callable")
            missing = [a for a in self.attributes if not hasattr(obj, a)]
            if missing:
                raise self._error(where, f"returned {type(obj).__name__}, which lacks the attribute '{missing[0]}'"
                                  + (f" (and {', '.join(missing[1:])})" if missing[1:] else ""))
        for attribute, allowed in self.values.items():
            value = getattr(obj, attribute)  # present: checked above or guaranteed by the base class
            if value not in allowed:
                raise self._error(where, f"has {attribute} = {value!r}; allowed: {', '.join(map(repr, allowed))}")
        return obj

    def _error(self, where: str, what: str) -> PetkitError:
        base = f"subclass petkit.interfaces.{self.base.__name__}" if self.base is not None else "return a callable"
        return PetkitError(f"{where} does not meet the {self.name} interface: it {what}",
                           f"{base} (docs/plugins.md lists what each registry expects)")


INTERFACES: dict[str, Interface] = {
    "backbones": Interface("backbone", Backbone),
    "heads": Interface("head", Head),
    "losses": Interface("loss", Loss, ("needs_fake", "classifier", "miner_kind", "use_miner"), callable=True, module=True,
                        values={"needs_fake": (True, False), "miner_kind": (None, *MINER_KINDS)}),
    "miners": Interface("miner", Miner, ("kind",), callable=True, values={"kind": MINER_KINDS}),
    "samplers": Interface("sampler", BatchSampler, ("__iter__", "__len__", "set_epoch", "adjacent_pairs", "rank", "world_size")),
    "augmentations": Interface("augmentation", None, callable=True),
    "optimizers": Interface("optimizer", torch.optim.Optimizer),
    "schedules": Interface("schedule", None, ("step", "epoch_end", "state_dict", "load_state_dict")),
    "datasets": Interface("dataset source", DatasetSource, ("detect", "scan", "read", "labelled", "priority")),
    "evaluators": Interface("evaluator", Evaluator, ("__call__",), callable=True),
    "submissions": Interface("submission writer", SubmissionWriter, ("needs_pairs",), callable=True),
}
