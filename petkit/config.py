"""Typed run configuration: YAML in, validated dataclasses, resolved YAML out.

Components are ``{name, args}`` specs looked up in the registries; this module only checks
their shape, the registries check the names. Every error names the offending key (as a
dotted path), what it got and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml

from petkit.errors import PetkitError
from petkit.limits import AT_LEAST_ONE, IMAGE_SIZE, Range, check_annotated, check_finite

Precision = Literal["auto", "fp32", "fp16", "bf16"]


@dataclass
class Component:
    """A registry lookup: ``name`` in the matching registry, built with ``args``."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    manifest: str | None = None  # resolved relative to the working directory
    # null: the size the backbone's weights were trained at (224 for ImageNet models), 112 without weights
    image_size: Annotated[int, IMAGE_SIZE] | None = None
    mean: Annotated[list[float], Range(0, 1)] | None = None  # None: the backbone's pretrained config
    std: Annotated[list[float], Range(0, 1, low_open=True)] | None = None
    cache_images: bool = True  # decode + resize each image once, keep uint8 in memory
    num_workers: Annotated[int, Range(0, 256)] = 2  # decoding threads when cache_images is false
    # batched: fast on-device warp + jitter; pet_faces / faces_distortion / classification / v2: torchvision v2
    augment: Component = field(default_factory=lambda: Component("batched"))
    sampler: Component = field(default_factory=lambda: Component("pk", {"p": 16, "k": 4}))


@dataclass
class ModelConfig:
    backbone: Component = field(
        # auto: hub or cached weights when they can be had (then the fine-tuning recipe applies), else random with a warning
        default_factory=lambda: Component("timm", {"model": "resnet18", "pretrained": "auto"})
    )
    head: Component = field(
        default_factory=lambda: Component("mlp", {"hidden_dim": 512, "embedding_dim": 128})
    )


@dataclass
class OptimConfig:
    optimizer: Component = field(default_factory=lambda: Component("adamw"))  # adamw | adam | sgd
    lr: Annotated[float, Range(0, 10, low_open=True, hint="typical values: 1e-4 - 1e-2")] = 1e-3
    weight_decay: Annotated[float, Range(0, 10)] = 0.05  # not applied to biases and norm weights
    schedule: Component = field(
        default_factory=lambda: Component("warmup_cosine", {"warmup_epochs": 1.0, "min_lr_ratio": 0.01})
    )
    # per parameter group learning rates: backbone, head, loss (ArcFace centres...); others use lr
    group_lr: dict[str, Annotated[float, Range(0, 10, low_open=True)]] = field(default_factory=dict)
    # backbone lr = lr x this unless group_lr.backbone is set; null: 0.1 on pretrained weights, 1 from scratch
    backbone_lr_ratio: Annotated[float, Range(0, 10, low_open=True)] | None = None


@dataclass
class TrainConfig:
    epochs: Annotated[int, Range(1, 100_000)] = 20
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Precision = "auto"  # auto: bf16 where the device runs it fast, else fp16/fp32
    channels_last: bool = True
    # frozen: batch norms keep their running statistics (affine weights still learn); auto: frozen on pretrained weights
    batch_norm: Literal["auto", "train", "frozen"] = "auto"
    # features: the head starts as the whitened PCA of the backbone's features on the train images; auto: on pretrained weights
    head_init: Literal["auto", "random", "features"] = "auto"
    # max global gradient norm; null disables
    grad_clip: Annotated[float, Range(0, low_open=True, hint="a max gradient norm such as 5, or null to disable")] | None = 5.0
    val_metric: str = "recall@1"  # or pair_accuracy: balanced same/different accuracy of the val pairs at pair_distance_threshold
    # Euclidean distance of L2-normalised embeddings below which a val pair counts as 'same' (the distortion use case's 0.5)
    pair_distance_threshold: Annotated[float, Range(0, 2)] = 0.5
    early_stopping_patience: Annotated[int, AT_LEAST_ONE] | None = 5  # epochs without improvement; null disables
    # a gain of val_metric at most this large does not reset the patience (best.pt still follows every gain)
    early_stopping_min_delta: Annotated[float, Range(0, 1)] = 0.0
    accumulate_steps: Annotated[int, Range(1, 1024)] = 1  # optimiser step every N batches (mining still sees one batch at a time)
    # e.g. 0.999: validate and save an exponential moving average of the weights
    ema_decay: Annotated[float, Range(0, 1, low_open=True, high_open=True, hint="typical values: 0.99 - 0.9999")] | None = None
    loggers: list[str] = field(default_factory=list)  # live loggers beside history.csv: tensorboard
    seed: Annotated[int, Range(0, 2**63 - 1)] = 0


@dataclass
class Config:
    name: str = "run"
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # supcon: the best test Recall@1 and mAP@R of benchmarks/bench_losses.py on real dog faces
    loss: Component = field(default_factory=lambda: Component("supcon", {"temperature": 0.1}))
    # null: the loss's own default (triplet: batch_all, contrastive: all_pairs; siamese_pairs: adjacent_pairs)
    miner: Component | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


# ---------------------------------------------------------------------------------------
# dict <-> dataclass with errors that name the key


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data, "")


def _build(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if cls is Component and isinstance(data, str):
        data = {"name": data}  # shorthand: `miner: batch_hard`
    if not isinstance(data, dict):
        raise PetkitError(
            f"config key '{where or '<root>'}' must be a mapping, got {type(data).__name__} {data!r}",
            _hint_for(cls),
        )
    hints = typing.get_type_hints(cls, include_extras=True)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f"; did you mean '{_join(where, close[0])}'?" if close else ""
            raise PetkitError(
                f"unknown config key '{_join(where, key)}'{suggestion}",
                f"keys allowed here: {', '.join(known)}",
            )
    values = {key: _convert(hints[key], data[key], _join(where, key)) for key in data}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field (Component.name) is missing
        raise PetkitError(f"config key '{where}' is incomplete: {exc}", _hint_for(cls)) from exc


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:  # a declared range (petkit.limits): convert, then check
        return check_annotated(tp, _convert(tp.__origin__, value, where), f"config key '{where}'")
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for member in (t for t in options if t is not type(None)):  # every member, in the order declared
            try:
                return _convert(member, value, where)
            except PetkitError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(getattr(t, "__name__", str(t)) for t in options)
        raise PetkitError(f"config key '{where}' must be {names}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise PetkitError(
                f"config key '{where}' is {value!r}; allowed values: {', '.join(map(str, allowed))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise PetkitError(f"config key '{where}' must be a list, got {value!r}")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise PetkitError(f"config key '{where}' must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if args and args[1] is not Any:
            return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    return check_finite(_scalar(tp, value, where), f"config key '{where}'")


def _scalar(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads '3e-4' (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise PetkitError(
            f"config key '{where}' must be {tp.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _hint_for(cls: type) -> str:
    if cls is Component:
        return "write a component as {name: ..., args: {...}}"
    return f"expected the keys {', '.join(f.name for f in dataclasses.fields(cls))}"


# ---------------------------------------------------------------------------------------
# files and overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PetkitError(f"config file not found: {path}", "pass an existing YAML file with --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PetkitError(
            f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            "check indentation and quoting near that line",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PetkitError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    _limit_size(data, str(path))
    return data


MAX_CONFIG_NODES = 100_000  # a real config has a few hundred values


def _limit_size(data: Any, where: str) -> None:
    """Refuse YAML whose aliases expand to an enormous tree ('billion laughs'): copying it would exhaust memory."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_NODES:
            raise PetkitError(f"{where} expands to more than {MAX_CONFIG_NODES:,} values (nested YAML aliases?)",
                              "write the config out without recursive anchors")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


class _OverrideLoader(yaml.SafeLoader):
    """YAML for one override value, without timestamps: ``name=2024-01-01`` stays a string."""


_OverrideLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _component_paths(cls: type = None, prefix: str = "") -> set[str]:
    """Dotted paths of every Component field of the schema (loss, miner, model.backbone, ...)."""
    cls = cls or Config
    paths = set()
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        inner = [t for t in typing.get_args(tp) if t is not type(None)] or [tp]
        if Component in inner:
            paths.add(_join(prefix, f.name))
        elif dataclasses.is_dataclass(inner[0]):
            paths |= _component_paths(inner[0], _join(prefix, f.name))
    return paths


COMPONENT_PATHS = frozenset(_component_paths())


def _field_type(parts: list[str]) -> Any:
    """The declared type at a dotted path of the schema, or None inside a component's args or a mapping."""
    cls: Any = Config
    tp: Any = None
    for part in parts:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or cls is Component:
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        tp = hints[part]
        inner = [t for t in typing.get_args(tp) if t is not type(None)] if typing.get_origin(tp) in (Union, types.UnionType) else [tp]
        cls = inner[0] if len(inner) == 1 else None
    return tp


def _is_text(tp: Any) -> bool:
    return tp is str or (typing.get_origin(tp) in (Union, types.UnionType) and set(typing.get_args(tp)) == {str, type(None)})


def merge_component(current: Any, value: Any) -> Any:
    """The one rule for changing a component (a flag, a dotted ``*.name=``, a YAML file alike).

    A different name: the new component with only the args given for it (the old ones go).
    The same name, or no name: the current component with the given args added to its own.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        return value  # not a component: validation names the key
    renamed = "name" in value and (not isinstance(current, dict) or value["name"] != current.get("name"))
    if renamed or not isinstance(current, dict):
        return {**value, "args": dict(value.get("args") or {})}
    args = dict(current.get("args") or {})
    if isinstance(value.get("args"), dict):
        args.update(value["args"])
    elif "args" in value:
        args = value["args"]  # not a mapping: validation names the key
    return {**current, **{k: v for k, v in value.items() if k != "args"}, "args": args}


def set_key(data: dict[str, Any], key: str, value: Any, where: str | None = None) -> None:
    """Set a dotted ``key`` to a typed ``value`` in config data, with the component rule."""
    where = where or key
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise PetkitError(f"override '{where}': '{key}' is not a dotted config key", "for example: train.epochs=5")
    node = data
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        rest = parts[i + 1:]
        if path in COMPONENT_PATHS and (not rest or rest == ["name"]):
            node[part] = merge_component(node.get(part), value if not rest else {"name": value})
            return
        if not rest:
            node[part] = value
            return
        child = node.get(part)
        if path in COMPONENT_PATHS and isinstance(child, str):
            child = node[part] = {"name": child}  # shorthand `miner: batch_hard`
        if child is None:
            if path in COMPONENT_PATHS:
                raise PetkitError(f"override '{where}': '{path}' is not set", f"name it first, e.g. {path}.name=...")
            child = node[part] = {}
        if not isinstance(child, dict):
            raise PetkitError(f"override '{where}': '{part}' is a value, not a section")
        node = child


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` in place: the value is YAML (``5``, ``true``, ``[1, 2]``), except where the
    schema declares text (``name=2024-01-01``, a path with ``#``), which is taken as written."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise PetkitError(
            f"override '{assignment}' is not of the form key=value", "for example: train.epochs=5"
        )
    tp = _field_type(key.strip().split("."))
    if _is_text(tp) and raw.strip() not in ("null", "~", ""):
        value: Any = raw
    else:
        try:
            value = yaml.load(raw, Loader=_OverrideLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise PetkitError(f"override '{assignment}': the value is not valid YAML") from exc
        _limit_size(value, f"override '{key.strip()}'")
    set_key(data, key, value, where=assignment)


def resolve(
    config_path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- ``base`` <- YAML file <- ``flags`` (dotted key -> typed value) <- dotted overrides."""
    data = to_dict(Config())
    if base:
        _deep_update(data, base)
    if config_path is not None:
        _deep_update(data, load_yaml(config_path))
    for key, value in (flags or {}).items():
        if value is not None:
            set_key(data, key, value)
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(data)


def _deep_update(target: dict[str, Any], update: dict[str, Any], prefix: str = "") -> None:
    for key, value in update.items():
        path = _join(prefix, key)
        current = target.get(key)
        if path in COMPONENT_PATHS:
            target[key] = merge_component(current, value)
        elif isinstance(value, dict) and isinstance(current, dict):
            _deep_update(current, value, path)
        else:
            target[key] = value


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
