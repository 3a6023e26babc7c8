import warnings
from importlib import metadata

import pytest

from petkit.errors import PetkitError
from petkit.registry import ALL_REGISTRIES, LOSSES, PluginWarning, Registry


def fresh(kind="widgets"):
    return Registry(kind)


def test_register_and_get():
    reg = fresh()

    @reg.register("alpha")
    def alpha(x=1):
        """An alpha widget."""
        return x

    assert reg.get("alpha") is alpha
    assert reg.names() == ["alpha"]
    entry = next(reg.entries())
    assert entry.summary == "An alpha widget."
    assert entry.source == __name__.split(".")[0]  # top-level package of a non-petkit registrant


def test_duplicate_names_are_rejected():
    reg = fresh()
    reg.add("a", lambda: 1)
    with pytest.raises(PetkitError, match="registered twice"):
        reg.add("a", lambda: 2)


def test_unknown_name_lists_known_and_close_matches():
    reg = fresh()
    for name in ("triplet", "arcface", "contrastive"):
        reg.add(name, lambda: None)
    with pytest.raises(PetkitError) as info:
        reg.get("triplett")
    message = info.value.message
    assert "arcface, contrastive, triplet" in message
    assert "did you mean 'triplet'" in message


def test_build_passes_only_accepted_context_and_checks_args():
    reg = fresh()
    reg.add("needs_classes", lambda num_classes, scale=1.0: (num_classes, scale))
    reg.add("plain", lambda margin=0.1: margin)
    assert reg.build({"name": "needs_classes", "args": {"scale": 2.0}}, num_classes=5, miner="m") == (5, 2.0)
    assert reg.build({"name": "plain"}, num_classes=5) == 0.1
    with pytest.raises(PetkitError, match="rejected its arguments"):
        reg.build({"name": "plain", "args": {"marign": 0.3}})
    with pytest.raises(PetkitError, match="set by petkit"):
        reg.build({"name": "needs_classes", "args": {"num_classes": 3}}, num_classes=5)


class FakeDist:
    name = "petkit-fake-plugin"


def fake_entry_points(monkeypatch, group, points):
    real = metadata.entry_points

    def entry_points(**kwargs):
        if kwargs.get("group") == group:
            return points
        return real(**kwargs)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def make_ep(name, value):
    ep = metadata.EntryPoint(name, value, "petkit.widgets")
    return ep._for(FakeDist()) if hasattr(ep, "_for") else ep


def test_entry_point_plugins_are_discovered_lazily(monkeypatch):
    fake_entry_points(monkeypatch, "petkit.widgets", [make_ep("sqrt", "math:sqrt")])
    reg = fresh()
    assert "sqrt" in reg.names()
    assert reg.get("sqrt")(9) == 3


def test_broken_plugin_is_a_warning_not_a_crash(monkeypatch):
    fake_entry_points(monkeypatch, "petkit.widgets", [make_ep("broken", "petkit_no_such_module_xyz:thing")])
    reg = fresh()
    reg.add("fine", lambda: 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = reg.names()
    assert names == ["fine"]
    assert any(issubclass(w.category, PluginWarning) and "broken" in str(w.message) for w in caught)


@pytest.mark.parametrize("registry", ALL_REGISTRIES, ids=lambda r: r.kind)
def test_every_builtin_registry_has_components(registry):
    assert registry.names(), f"{registry.kind} has no built-in components"
    for entry in registry.entries():
        assert entry.summary, f"{registry.kind} '{entry.name}' has no docstring summary"


def test_lookup_does_not_depend_on_import_order():
    # the registry imports its own built-in modules on first use
    assert "triplet" in LOSSES and "arcface" in LOSSES
