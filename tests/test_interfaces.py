"""Every registry checks what its factories return; every built-in component meets its interface;
plugins that do not get one clear line; a plugin reusing a taken name is a warning naming both."""

import warnings
from importlib import metadata

import pytest
import torch
from torch import nn

from petkit.errors import PetkitError
from petkit.interfaces import INTERFACES, DatasetSource, Evaluator, SubmissionWriter
from petkit.registry import ALL_REGISTRIES, DATASETS, EVALUATORS, LOSSES, MINERS, SUBMISSIONS, PluginWarning, Registry


def test_every_registry_has_an_interface():
    assert {r.kind for r in ALL_REGISTRIES} == set(INTERFACES)


@pytest.mark.parametrize("name", EVALUATORS.names())
def test_every_evaluator_meets_its_interface(name):
    evaluator = EVALUATORS.build({"name": name})
    assert callable(evaluator)
    assert isinstance(evaluator, Evaluator) or INTERFACES["evaluators"].check(evaluator, name) is evaluator


@pytest.mark.parametrize("name", SUBMISSIONS.names())
def test_every_submission_writer_meets_its_interface(name):
    writer = SUBMISSIONS.build({"name": name})
    assert isinstance(writer, SubmissionWriter) and writer.needs_pairs == (name == "pair_scores")


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_source_meets_its_interface_and_reads_its_own_layout(name, tmp_path):
    from petkit.data.synthetic import generate

    source = DATASETS.build({"name": name})
    assert isinstance(source, DatasetSource)
    photos = generate(tmp_path / "photos", identities=2, images_per_identity=2, size=24, seed=0)
    layouts = {"folder": photos, "images": photos / "pet_000", "manifest": None, "pairs": None, "course_verification": None,
               "split_folders": None}
    if name == "split_folders":
        (tmp_path / "splits" / "train").mkdir(parents=True)
        (photos / "pet_000").rename(tmp_path / "splits" / "train" / "pet_000")
        (tmp_path / "splits" / "test").mkdir()
        (photos / "pet_001").rename(tmp_path / "splits" / "test" / "pet_001")
        layouts[name] = tmp_path / "splits"
    if name == "manifest":
        layouts[name] = tmp_path / "m.csv"
        layouts[name].write_text("path,identity\nphotos/pet_000/pet_000_00.jpg,a\nphotos/pet_001/pet_001_00.jpg,b\n")
    if name == "pairs":
        layouts[name] = tmp_path / "p.csv"
        layouts[name].write_text("pair_id,path_a,path_b\n1,photos/pet_000/pet_000_00.jpg,photos/pet_001/pet_001_00.jpg\n")
    if name == "course_verification":
        (tmp_path / "course" / "known").mkdir(parents=True)
        (photos / "pet_000").rename(tmp_path / "course" / "known" / "pet_000")
        (tmp_path / "course" / "unknown_test").mkdir()
        (photos / "pet_001" / "pet_001_00.jpg").rename(tmp_path / "course" / "unknown_test" / "x.jpg")
        layouts[name] = tmp_path / "course"
    path = layouts[name]
    assert source.detect(path)
    manifest = source.read(path)
    assert len(manifest) >= 1 and all(manifest.abspath(row).is_file() for row in manifest.rows)
    assert all(bool(row["identity"]) == source.labelled for row in manifest.rows if row.get("role") != "query")


@pytest.mark.parametrize("name", MINERS.names())
def test_every_miner_declares_its_kind(name):
    assert MINERS.build({"name": name}).kind in ("triplet", "pair")


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_declares_what_it_needs(name):
    args = {"losses": [{"name": "cross_entropy"}, {"name": "center", "weight": 0.01}]} if name == "sum" else {}
    loss = LOSSES.build({"name": name, "args": args}, num_classes=3, embedding_dim=4)
    assert loss.needs_fake in (True, False) and loss.miner_kind in (None, "triplet", "pair")
    assert loss.classifier is None or isinstance(loss.classifier, nn.Module)
    if loss.classifier is not None:
        assert loss.classifier(torch.rand(2, 4)).shape == (2, 3)


def plugin_registry(monkeypatch, kind, **points):
    eps = [metadata.EntryPoint(name, value, f"petkit.{kind}") for name, value in points.items()]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [e for e in eps if e.group == kw.get("group")] if "group" in kw else real(**kw))
    return Registry(kind, noun="loss" if kind == "losses" else None)


class BareLoss(nn.Module):  # a plugin loss written without petkit's interface
    def forward(self, embeddings, labels):
        return embeddings.sum()


def bare_loss():
    return BareLoss()


def test_a_plugin_loss_without_the_interface_fails_with_one_line_naming_the_attribute(monkeypatch):
    registry = plugin_registry(monkeypatch, "losses", bare=f"{__name__}:bare_loss")
    with pytest.raises(PetkitError) as error:
        registry.build({"name": "bare"})
    message = error.value.message
    assert "\n" not in message and "loss 'bare'" in message and "lacks the attribute 'needs_fake'" in message
    assert "petkit.interfaces.Loss" in error.value.hint


def not_a_miner():
    return object()


def test_a_plugin_returning_the_wrong_thing_is_one_clear_line(monkeypatch):
    registry = plugin_registry(monkeypatch, "miners", odd=f"{__name__}:not_a_miner")
    with pytest.raises(PetkitError, match="miner 'odd' .* does not meet the miner interface: it returned object, which is not callable"):
        registry.build({"name": "odd"})


def test_a_plugin_reusing_a_built_in_name_is_a_warning_naming_both_packages(monkeypatch):
    eps = [metadata.EntryPoint("triplet", f"{__name__}:bare_loss", "petkit.losses")]
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: eps if kw.get("group") == "petkit.losses" else ([] if "group" in kw else real(**kw)))
    registry = Registry("losses", noun="loss")
    registry.add("triplet", LOSSES.get("triplet"), source="petkit")  # the built-in, registered first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.names()
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(messages) == 1 and "'triplet'" in messages[0] and "taken by petkit" in messages[0]
    assert "triplet" in names and registry.get("triplet") is LOSSES.get("triplet")  # the built-in keeps its name
