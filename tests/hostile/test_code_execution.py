"""1. Loading a file never runs code; a file whose contents were altered is refused.

A crafted checkpoint whose unpickling would create a marker file is given to every command that
reads a checkpoint: the marker must never appear, and each command fails with one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.hostile.conftest import one_line_error, run_petkit


class _Payload:
    """Unpickling calls os.system: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture()
def crafted(material, tmp_path):
    """(checkpoint path, marker path): a petkit-looking checkpoint whose weights entry is a code payload."""
    from petkit.models.checkpoint import read_checkpoint

    marker = tmp_path / "PWNED"
    state = read_checkpoint(material["model"])
    path = tmp_path / "evil.pt"
    torch.save({"format": "petkit.checkpoint", "version": 2, "card": state.get("card", {}), "model": _Payload(marker)}, path)
    return path, marker


def test_the_payload_does_run_when_unpickled_without_protection(crafted):
    """The crafted file is real: loaded the unsafe way, it writes the marker (so the tests below can fail)."""
    path, marker = crafted
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(path)!r}, weights_only=False)"], check=False,
                   capture_output=True)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("command", ["embed", "export-onnx", "search", "resume", "evaluate-like-embed"])
def test_no_reading_command_runs_the_payload(command, crafted, material, tmp_path, capsys):
    path, marker = crafted
    if command == "embed":
        code, _, err = run_petkit(capsys, "embed", path, material["photos"], "-o", tmp_path / "e.npz", "--device", "cpu")
    elif command == "export-onnx":
        code, _, err = run_petkit(capsys, "export-onnx", path, "-o", tmp_path / "m.onnx", "--images", material["photos"])
    elif command == "search":
        code, _, err = run_petkit(capsys, "search", material["index"], material["photo"], "--model", path, "--device", "cpu")
    elif command == "resume":
        run = tmp_path / "runs" / "r"
        run.mkdir(parents=True)
        (run / "last.pt").write_bytes(path.read_bytes())
        (run / "config.yaml").write_text(f"name: r\noutput_dir: {tmp_path / 'runs'}\ndata: {{manifest: {material['manifest']}}}\n")
        code, _, err = run_petkit(capsys, "train", "--resume", "--name", "r", "--output-dir", tmp_path / "runs", "--device", "cpu")
    else:  # the same file under an ONNX-looking or odd name goes the checkpoint way and is refused alike
        odd = tmp_path / "model.pth"
        odd.write_bytes(path.read_bytes())
        code, _, err = run_petkit(capsys, "embed", odd, material["photos"], "-o", tmp_path / "e.npz", "--device", "cpu")
    assert not marker.exists(), f"{command} ran code from the checkpoint"
    assert one_line_error(code, err), err
    assert "cannot read checkpoint" in err or "holds objects" in err or "WeightsUnpickler" in err


def test_a_checkpoint_whose_weights_were_replaced_is_refused(material, tmp_path, capsys):
    from petkit.models.checkpoint import read_checkpoint

    state = read_checkpoint(material["model"])
    for value in (0.0, float("nan")):
        state["model"] = {k: torch.full_like(v, value) if v.is_floating_point() else v for k, v in state["model"].items()}
        path = tmp_path / f"tampered-{value}.pt"
        torch.save(state, path)
        code, _, err = run_petkit(capsys, "embed", path, material["photos"], "-o", tmp_path / "e.npz", "--device", "cpu")
        assert one_line_error(code, err) and "do not match the fingerprint" in err, err
        assert not (tmp_path / "e.npz").exists()


def _onnx(material, tmp_path):
    from petkit.export.onnx import export_onnx

    path = tmp_path / "model.onnx"
    export_onnx(material["model"], path, material["photos"], samples=4)
    return path


def test_an_onnx_file_with_a_forged_fingerprint_or_weights_is_refused(material, tmp_path, capsys):
    import onnx

    path = _onnx(material, tmp_path)
    code, _, err = run_petkit(capsys, "embed", path, material["photos"], "-o", tmp_path / "ok.npz", "--device", "cpu")
    assert code == 0, err

    graph = onnx.load(str(path))
    for entry in graph.metadata_props:  # pass it off as another model
        if entry.key == "petkit_card":
            card = json.loads(entry.value)
            card["fingerprint"] = "0123456789abcdef"
            entry.value = json.dumps(card)
    forged = tmp_path / "forged.onnx"
    onnx.save(graph, str(forged))
    code, _, err = run_petkit(capsys, "embed", forged, material["photos"], "-o", tmp_path / "f.npz", "--device", "cpu")
    assert one_line_error(code, err) and "seal does not match" in err, err

    graph = onnx.load(str(path))
    tensor = graph.graph.initializer[0]
    array = onnx.numpy_helper.to_array(tensor).copy()
    array[...] = 0
    tensor.CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    zeroed = tmp_path / "zeroed.onnx"
    onnx.save(graph, str(zeroed))
    code, _, err = run_petkit(capsys, "embed", zeroed, material["photos"], "-o", tmp_path / "z.npz", "--device", "cpu")
    assert one_line_error(code, err) and "seal does not match" in err, err

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, str(bare))
    code, _, err = run_petkit(capsys, "embed", bare, material["photos"], "-o", tmp_path / "b.npz", "--device", "cpu")
    assert one_line_error(code, err) and "no petkit seal" in err, err


def test_vectors_must_be_finite_and_from_a_named_model_wherever_they_are_read(material, tmp_path, capsys):
    from petkit import embeddings as emb

    data = emb.load(material["emb"])
    with np.load(material["emb"]) as arrays:
        raw = {k: arrays[k] for k in arrays.files}
    cases = {
        "nan.npz": {**raw, "vectors": np.where(np.arange(len(raw["vectors"]))[:, None] == 1, np.nan, raw["vectors"]).astype(np.float32)},
        "nofp.npz": {**raw, "fingerprint": np.array("")},
        "short.npz": {**raw, "identities": raw["identities"][:2]},
    }
    for name, arrays in cases.items():
        with open(tmp_path / name, "wb") as handle:
            np.savez(handle, **arrays)
        for argv in (("evaluate", tmp_path / name, "-o", tmp_path / f"{name}.json"), ("index", "add", material["index"], tmp_path / name),
                     ("index", "build", tmp_path / name, "-o", tmp_path / f"{name}.index")):
            code, _, err = run_petkit(capsys, *argv)
            assert one_line_error(code, err), (name, argv, err)
            assert not (tmp_path / f"{name}.json").exists() and not (tmp_path / f"{name}.index").exists()
    with pytest.raises(Exception, match="NaN or infinity"):
        emb.save(tmp_path / "x.npz", emb.EmbeddingSet(np.full((2, 4), np.nan, np.float32), data.subset(np.arange(2)).columns, "ab"))


def test_a_model_that_embeds_to_nan_is_refused_before_anything_is_written(material, tmp_path):
    from petkit.data.batches import ImageStore
    from petkit.data.sources import open_source
    from petkit.engine.embedder import TorchEmbedder, embed_store
    from petkit.engine.engine import Engine
    from petkit.errors import PetkitError
    from petkit.models.checkpoint import load_checkpoint

    model = load_checkpoint(material["model"]).model
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    store = ImageStore(open_source(material["photos"]), model.card.image_size, cache=False)
    with pytest.raises(PetkitError, match="NaN or infinite embeddings for 6 image"):
        embed_store(TorchEmbedder(model, Engine.create("cpu", "fp32", channels_last=False)), store)


def test_a_card_cannot_make_petkit_fetch_or_read_initial_weights(material, tmp_path, capsys):
    """The weights come from the checkpoint: 'pretrained' and 'weights' in a card's backbone are ignored."""
    from petkit.models.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "card.pt"
    save_checkpoint(path, load_checkpoint(material["model"]).model)
    state = torch.load(path, weights_only=True)
    state["card"]["backbone"]["args"] |= {"pretrained": True, "weights": str(tmp_path / "secret.pth")}
    torch.save(state, path)
    (tmp_path / "secret.pth").write_bytes(b"never read")
    code, _, err = run_petkit(capsys, "embed", path, material["photos"], "-o", tmp_path / "e.npz", "--device", "cpu")
    assert code == 0, err
    from petkit import embeddings as emb

    np.testing.assert_allclose(emb.load(tmp_path / "e.npz").vectors, emb.load(material["emb"]).vectors, atol=1e-5)
