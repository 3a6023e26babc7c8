"""The example plugin package, discovered through entry points as a third party would ship it."""

import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from petkit.interfaces import Backbone
from petkit.registry import Registry

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "petkit-example-plugin"


def declared_entry_points():
    """The entry points as pyproject.toml declares them (whether or not the plugin is installed)."""
    import tomllib

    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    return {group: [metadata.EntryPoint(name, value, group) for name, value in points.items()]
            for group, points in project["entry-points"].items()}


def test_example_plugin_components_are_discovered_and_work(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    points = declared_entry_points()
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: points.get(kw.get("group"), []) if "group" in kw else real(**kw))
    backbones, losses = Registry("backbones"), Registry("losses")
    assert backbones.names() == ["example_tiny_cnn"] and losses.names() == ["example_normsoftmax"]
    backbone = backbones.build({"name": "example_tiny_cnn", "args": {"width": 8}})
    assert isinstance(backbone, Backbone)
    features = backbone.module(torch.rand(4, 3, 32, 32))
    assert features.shape == (4, backbone.num_features)
    loss_fn = losses.build({"name": "example_normsoftmax"}, num_classes=2, embedding_dim=backbone.num_features)
    loss = loss_fn(features, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and loss_fn.classifier.weight.grad is not None


def test_installed_plugin_shows_its_package_name():
    """When installed (make install does it), the global registries name the distribution."""
    try:
        metadata.distribution("petkit-example-plugin")
    except metadata.PackageNotFoundError:
        pytest.skip("petkit-example-plugin is not installed (make install installs it)")
    from petkit.registry import BACKBONES, LOSSES

    sources = {e.name: e.source for e in [*BACKBONES.entries(), *LOSSES.entries()]}
    assert sources["example_tiny_cnn"] == "petkit-example-plugin"
    assert sources["example_normsoftmax"] == "petkit-example-plugin"
    assert sources["triplet"] == "petkit" and "petkit_example_plugin" in sys.modules
