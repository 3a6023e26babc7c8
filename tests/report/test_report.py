"""petkit report: every figure's data equals the metric functions' output, Grad-CAM finds the region a
similarity depends on, the page says what is missing, and a real browser renders it (tests/report/test_browser.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.evaluation import metrics as M


def figure(result, key) -> dict:
    return json.loads((result.out / "figures" / f"{key}.json").read_text())["data"]


def test_every_figure_has_a_png_and_its_data(report):
    for key in report.figures:
        assert (report.out / "figures" / f"{key}.png").stat().st_size > 1000
        assert (report.out / "figures" / f"{key}.json").is_file()
    assert {"roc_det", "similarity_histograms", "real_fake", "map_pca", "map_tsne", "grid_worst", "grid_random", "open_set",
            "few_shot"} <= set(report.figures)


def test_roc_and_eer_equal_the_metric_functions_and_metrics_json(report, fake_set):
    from petkit.evaluation.evaluate import evaluate
    from petkit.evaluation.evaluators import labelled_real, verification_pair_scores

    data = figure(report, "roc_det")
    pairs = verification_pair_scores(labelled_real(emb.load(fake_set["emb"])))
    fpr, tpr, _ = M.roc_curve(pairs.scores, pairs.same)
    np.testing.assert_array_equal(np.array(data["fpr"]), fpr[data["indices"]])
    np.testing.assert_array_equal(np.array(data["tpr"]), tpr[data["indices"]])
    metrics = {m["name"]: m["value"] for m in evaluate(fake_set["emb"], ["verification"], options={"verification": {"bootstrap": 0}})["metrics"]
               if "category" not in m}
    assert data["eer"] == metrics["eer"] and data["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-12)
    assert [m["tar"] for m in data["tar_at_far"]] == [metrics[f"tar@far={f:g}"] for f in (1e-4, 1e-3, 1e-2, 1e-1)]
    histogram = figure(report, "similarity_histograms")
    edges = np.array(histogram["edges"])
    assert histogram["genuine"] == np.histogram(pairs.scores[pairs.same], bins=edges)[0].tolist()
    assert histogram["impostor"] == np.histogram(pairs.scores[~pairs.same], bins=edges)[0].tolist()
    assert sum(histogram["genuine"]) + sum(histogram["impostor"]) == len(pairs.scores)
    labels = [t["label"] for t in histogram["thresholds"]]
    assert labels == ["fixed 0.5", "distance 0.5"] and histogram["thresholds"][1]["value"] == pytest.approx(0.875)


def test_real_fake_legend_equals_metrics_json(report, fake_set):
    from petkit.evaluation.evaluate import evaluate

    data = figure(report, "real_fake")
    metrics = {m["name"]: m["value"] for m in evaluate(fake_set["emb"], ["real_fake"])["metrics"]}
    assert data["eer_real"] == metrics["eer_real"] and data["eer_fake"] == metrics["eer_fake"]
    assert data["pairs"]["anchor-fake"] > 0
    html = (report.out / "index.html").read_text()
    assert f"{metrics['eer_fake']:.4f}" in html and f"{metrics['eer_real']:.4f}" in html


def test_open_set_and_few_shot_curves_equal_the_metric_functions(report, fake_set):
    from petkit.evaluation.identification import enrolment_split, open_set_scores

    real = emb.load(fake_set["emb"]).labelled_real()
    probes, gallery = enrolment_split(real, 0.5, 1, 0)
    scores = open_set_scores(probes, gallery)
    data = figure(report, "open_set")
    expected = M.dir_at_fpir(scores["top"], scores["known"], scores["correct"], tuple(data["fpir"]))
    assert data["dir"] == [r.dir for r in expected] and data["thresholds"] == [r.threshold for r in expected]
    shots = figure(report, "few_shot")
    again = [M.few_shot_accuracy(real.vectors, real.identities, shots["n_way"], k, 1, shots["episodes"], 0).mean for k in shots["k_shot"]]
    assert shots["accuracy"] == again


def test_grids_rank_like_the_metrics_and_frame_by_identity(report, fake_set):
    real = emb.load(fake_set["emb"]).labelled_real()
    grid = figure(report, "grid_worst")
    result = M.retrieval_metrics(real.vectors, real.identities, real.vectors, real.identities, ks=(1,), leave_one_out=True)
    assert [row["ap"] for row in grid["rows"]] == sorted(result.per_query["mAP"])[: len(grid["rows"])]
    for row in grid["rows"]:
        assert all(m["correct"] == (m["identity"] == row["identity"]) for m in row["matches"])
        assert [m["score"] for m in row["matches"]] == sorted((m["score"] for m in row["matches"]), reverse=True)
        assert row["query"] not in [m["path"] for m in row["matches"]]  # leave-one-out
    assert grid["gradcam"] is True
    thumbs = list((report.out / "thumbs").iterdir())
    assert thumbs and all(max(__import__("PIL.Image", fromlist=["Image"]).open(t).size) <= 96 for t in thumbs)


def test_gradcam_peaks_where_the_similarity_comes_from():
    from petkit.models.card import ModelCard
    from petkit.models.model import EmbeddingModel
    from petkit.report.gradcam import similarity_cams

    class TopLeft(torch.nn.Module):  # only the top-left quarter reaches the embedding
        def forward(self, x):
            mask = torch.zeros_like(x)
            mask[:, :, : x.shape[2] // 2, : x.shape[3] // 2] = 1
            return x * mask

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), TopLeft(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    card = ModelCard(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 8)
    model = EmbeddingModel(net, torch.nn.Identity(), card)
    a, b = (torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for _ in range(2))
    for cam in similarity_cams(model, a, b):
        inside, outside = cam[:16, :16], cam.clone()
        outside[:16, :16] = 0
        peak = np.unravel_index(int(cam.argmax()), cam.shape)
        assert peak[0] < 16 and peak[1] < 16
        assert float(inside.mean()) > 10 * float(outside[16:, 16:].mean() + 1e-6)


def test_a_report_without_run_model_split_or_calibration_says_what_is_missing(fake_set, tmp_path):
    from petkit.report import build_report

    result = build_report(fake_set["emb"], out=tmp_path / "r", gradcam=True)
    html = (result.index).read_text()
    for reason in ("no run folder given", "no checkpoint given (--model best.pt)", "no calibration.json", "umap-learn is not installed",
                   "no embeddings of the untrained model"):
        assert reason in html or reason.replace("(", "&#40;") in html, reason
    with pytest.raises(PetkitError, match="nothing to report on"):
        build_report(out=tmp_path / "none")
    with pytest.raises(PetkitError, match="output already exists"):
        build_report(fake_set["emb"], out=tmp_path / "r")


def test_a_run_only_report_draws_the_curves_and_marks_best_and_stop(tmp_path):
    from petkit.report import build_report

    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch,train_loss,lr,val_recall@1\n0,,,0.2\n1,2.0,0.001,0.4\n2,1.5,0.0005,0.3\n")
    (run / "steps.csv").write_text("epoch,batch,step,loss,lr\n1,1,1,2.2,0.0005\n1,2,2,1.8,0.001\n2,1,3,1.6,0.0007\n2,2,4,1.4,0.0005\n")
    (run / "train.log").write_text("2026-01-01 00:00:00 early stop: no recall@1 improvement for 1 epochs\n")
    result = build_report(run=run, out=tmp_path / "r")
    data = figure(result, "training")
    assert result.figures == ["training"] and data["best_epoch"] == 1 and data["stop"].startswith("early stop")
    assert data["steps"]["lr"] == [0.0005, 0.001, 0.0007, 0.0005] and data["val"]["val_recall@1"] == [0.2, 0.4, 0.3]
    assert "no embeddings given" in result.index.read_text()


def test_embed_untrained_reproduces_the_runs_epoch_0(prepared, tmp_path):
    """'petkit embed --untrained': the run's architecture at the weights 'petkit train' started from (same seed),
    so the 'before' map shows the model whose val Recall@1 is epoch 0 of history.csv."""
    from petkit.config import resolve
    from petkit.data import manifest as mf
    from petkit.engine.embedder import embed
    from petkit.engine.trainer import train

    config = resolve(None, [f"data.manifest={prepared}", f"output_dir={tmp_path}", "name=u", "train.epochs=1", "data.image_size=32",
                            "train.device=cpu", "train.precision=fp32", "train.seed=7", "data.sampler.args={p: 4, k: 2}"])
    result = train(config)
    before = embed(result.best_checkpoint, prepared, split="val", device="cpu", precision="fp32", untrained_seed=7)
    val = mf.read_manifest(prepared).select("val").real()
    metric = M.retrieval_metrics(before.vectors, before.identities, before.vectors, before.identities, ks=(1,), leave_one_out=True)
    assert len(before) == len(val)
    assert metric.metrics["recall@1"] == pytest.approx(result.history[0]["val_recall@1"], abs=1e-9)
    trained = embed(result.best_checkpoint, prepared, split="val", device="cpu")
    assert before.fingerprint != trained.fingerprint  # its own weights, never mixed with the trained model's


def test_evaluate_report_and_the_report_command_write_the_same_page(fake_set, tmp_path, capsys):
    from tests.hostile.conftest import run_petkit

    code, out, err = run_petkit(capsys, "evaluate", fake_set["emb"], "-o", tmp_path / "m.json", "--report", tmp_path / "a")
    assert code == 0, err
    code, out, err = run_petkit(capsys, "report", fake_set["emb"], "-o", tmp_path / "b", "--no-gradcam", "--queries", "2")
    assert code == 0 and "figures in" in out and "absent:" in err, err
    assert sorted(p.name for p in (tmp_path / "a" / "figures").iterdir()) == sorted(p.name for p in (tmp_path / "b" / "figures").iterdir())
    code, _, err = run_petkit(capsys, "report", fake_set["emb"], "-o", tmp_path / "b")
    assert code == 2 and "output already exists" in err
    code, _, err = run_petkit(capsys, "report", fake_set["emb"], "-o", tmp_path / "c", "--threshold", "3")
    assert code == 2 and "--threshold is 3.0; it must be in [-1, 1]" in err
