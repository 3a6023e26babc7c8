"""``petkit report``: embeddings (+ run folder, model, calibration) -> report/index.html.

One call (:func:`build_report`) behind ``petkit report``, ``petkit evaluate --report`` and the end
of ``petkit train`` (curves only). Each figure is drawn only where its inputs exist; the page says
why any other is absent. Beside every PNG under ``figures/`` its data is written as JSON (the
plotted points), so a test or a user can check the picture against metrics.json.
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable

import numpy as np

from petkit import __version__
from petkit import embeddings as emb
from petkit.errors import PetkitError
from petkit.io import atomic_path, refuse_overwrite, write_json, write_text
from petkit.limits import SIMILARITY, Range, checked
from petkit.report import figures as F

THUMB_SIZE = 96  # px: grid thumbnails are resized copies under report/thumbs/, never the photos themselves
INDEX = "index.html"


@dataclass
class ReportResult:
    out: Path
    index: Path
    figures: list[str] = field(default_factory=list)  # keys of the figures drawn
    absent: list[tuple[str, str]] = field(default_factory=list)  # (figure, why it is absent)
    seconds: float = 0.0


class _Report:
    """Collects figures and absences while the sections run, then writes the files and the page."""

    def __init__(self, out: Path, progress: Callable[[str], None] | None):
        self.out, self.progress = out, progress or (lambda text: None)
        self.plots: list[F.Plot] = []
        self.absent: list[tuple[str, str]] = []
        self.metrics: list[dict] = []
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []
        self.sources: list[tuple[str, str]] = []

    def add(self, plot: F.Plot) -> None:
        self.plots.append(plot)

    def missing(self, what: str, why: str) -> None:
        self.absent.append((what, why))


@checked
def build_report(
    embeddings: str | Path | None = None,
    run: str | Path | None = None,
    model: str | Path | None = None,
    gallery: str | Path | None = None,
    calibration: str | Path | None = None,
    before: str | Path | None = None,
    out: str | Path = "report",
    split: str | None = None,
    thresholds: tuple[float, ...] | list[float] = (),
    distance_thresholds: tuple[float, ...] | list[float] = (),
    max_points: Annotated[int, Range(10, 100_000)] = 2000,
    tsne_points: Annotated[int, Range(10, 20_000)] = 1000,
    grid_queries: Annotated[int, Range(1, 100)] = 6,
    top_k: Annotated[int, Range(1, 20)] = 5,
    gradcam: bool = True,
    seed: Annotated[int, Range(0, 2**31)] = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write ``out/index.html`` with ``out/figures/*.png`` (+ ``*.json``) and ``out/thumbs/``."""
    started = time.perf_counter()
    out = Path(out)
    for value in thresholds:
        SIMILARITY.check(value, "--threshold")
    for value in distance_thresholds:
        Range(0, 2).check(value, "--distance-threshold")
    if embeddings is None and run is None:
        raise PetkitError("nothing to report on", "pass an embeddings file (petkit embed) and/or --run runs/NAME")
    refuse_overwrite([out / INDEX], overwrite, inputs=(embeddings, gallery, calibration, before, model))
    report = _Report(out, progress)
    if run is not None:
        _training(report, Path(run))
    else:
        report.missing("Training curves", "no run folder given (--run runs/NAME)")
    if embeddings is not None:
        _embedding_sections(report, Path(embeddings), model, gallery, calibration, before, split, list(thresholds),
                            list(distance_thresholds), max_points, tsne_points, grid_queries, top_k, gradcam, seed)
    else:
        report.missing("Metrics, verification, maps, retrieval grids", "no embeddings given (petkit report EMBEDDINGS.npz)")
    _write(report)
    return ReportResult(out, out / INDEX, [p.key for p in report.plots], report.absent, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------
# sections


def _training(report: _Report, run: Path) -> None:
    history_path = run / "history.csv"
    if not history_path.is_file():
        report.missing("Training curves", f"{history_path} does not exist (is {run} a run folder of 'petkit train'?)")
        return
    history = _read_csv(history_path)
    steps = _read_csv(run / "steps.csv") if (run / "steps.csv").is_file() else []
    val_metric, stop = "recall@1", ""
    config = run / "config.yaml"
    if config.is_file():
        import yaml

        try:
            document = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            val_metric = str(document.get("train", {}).get("val_metric", val_metric))
        except (yaml.YAMLError, AttributeError):
            pass
    log = run / "train.log"
    if log.is_file():
        stops = [line.split(" ", 2)[-1] for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if "early stop" in line or "training stopped" in line]
        stop = stops[-1] if stops else ""
    report.sources.append(("run", str(run)))
    report.progress("training curves")
    report.add(F.training_curves(history, steps, val_metric, stop))
    if not steps:
        report.missing("Per-batch loss and learning rate", f"{run / 'steps.csv'} does not exist (a run from before petkit recorded it)")


def _embedding_sections(report: _Report, embeddings: Path, model, gallery, calibration, before, split, thresholds, distance_thresholds,
                        max_points: int, tsne_points: int, grid_queries: int, top_k: int, gradcam: bool, seed: int) -> None:
    from petkit.evaluation.evaluators import distance_to_cosine, labelled_real, real_fake_pair_scores, verification_pair_scores
    from petkit.retrieval.calibration import resolve_threshold

    probes, gallery_set = emb.select(embeddings, split, gallery)
    everything = emb.load(embeddings)
    data = everything.where("splits", split)
    report.sources.append(("embeddings", f"{embeddings} ({len(data)} images, model {data.fingerprint})"))
    threshold, source = None, ""
    try:
        threshold, source = resolve_threshold(None, calibration, data.fingerprint, data.model)
    except PetkitError as error:
        report.missing("Calibrated threshold", error.message)
    if threshold is None and not calibration:
        report.missing("Calibrated threshold", "no calibration.json beside the model and none given (--calibration)")
    marks = ([("calibrated", threshold)] if threshold is not None else []) + [(f"fixed {t:g}", t) for t in thresholds] + [
        (f"distance {d:g}", distance_to_cosine(d)) for d in distance_thresholds]

    report.progress("metrics")
    _metrics_table(report, embeddings, split, gallery, bool(np.any(everything.columns["is_fake"] == "1")))

    real = labelled_real(data)
    report.progress("verification")
    try:
        pairs = verification_pair_scores(real)
        if pairs.same.all() or not pairs.same.any():
            raise PetkitError("needs same- and different-identity pairs")
        report.add(F.roc_det(pairs.scores, pairs.same))
        report.add(F.similarity_histograms(pairs.scores, pairs.same, marks))
    except PetkitError as error:
        report.missing("ROC, DET and similarity histograms", error.message)

    if np.any(data.columns["is_fake"] == "1"):
        report.progress("real vs fake")
        fake_pairs = real_fake_pair_scores(data)
        from petkit.evaluation import metrics as M

        eers = {name: M.equal_error_rate(p.scores, p.same)[0] for name, p in fake_pairs.items()}
        report.add(F.real_fake_histograms(fake_pairs, eers))
    else:
        report.missing("Real vs fake distances", "no image is marked fake (is_fake = 1)")

    report.progress("embedding maps")
    sample = _sample(len(data), max_points, seed)
    _maps(report, data.subset(sample), "after training" if before else "embeddings", "", tsne_points, seed)
    if before is not None:
        earlier = emb.load(before).where("splits", split)
        _maps(report, earlier.subset(_sample(len(earlier), max_points, seed)), "before training (untrained model)", "_before", tsne_points, seed)
    else:
        report.missing("Maps before training", "no embeddings of the untrained model given (--before)")

    report.progress("data audit")
    _audit(report, everything)
    report.progress("retrieval grids")
    _grids(report, probes, gallery_set, threshold, grid_queries, top_k, model, gradcam, seed)
    report.progress("open-set and few-shot curves")
    _identification(report, real, threshold, seed)
    if threshold is not None:
        report.sources.append(("threshold", f"{threshold:.4f} from {source}"))


def _metrics_table(report: _Report, embeddings: Path, split, gallery, has_fakes: bool) -> None:
    from petkit.evaluation.evaluate import evaluate

    protocols = ["retrieval", "verification"] + (["real_fake"] if has_fakes else [])
    for protocol in protocols:
        try:
            document = evaluate(embeddings, [protocol], split=split, gallery_path=gallery)
        except PetkitError as error:
            report.missing(f"{protocol} metrics", error.message)
            continue
        for entry in document["metrics"]:
            if "category" in entry:
                continue
            report.metrics.append(entry)


def _maps(report: _Report, data: emb.EmbeddingSet, label: str, suffix: str, tsne_points: int, seed: int) -> None:
    if len(data) < 3:
        report.missing(f"Embedding maps ({label})", f"only {len(data)} images")
        return
    report.add(F.embedding_map(data.vectors, data.identities, data.columns["is_fake"], "pca", f"PCA, {label}", seed, f"map_pca{suffix}"))
    small = data.subset(_sample(len(data), tsne_points, seed))
    if len(small) >= 5:
        report.add(F.embedding_map(small.vectors, small.identities, small.columns["is_fake"], "tsne", f"t-SNE, {label}", seed,
                                   f"map_tsne{suffix}"))
    try:
        import umap  # noqa: F401
    except ImportError:
        if not suffix:
            report.missing("UMAP map", "umap-learn is not installed (pip install 'petkit[umap]')")
        return
    report.add(F.embedding_map(small.vectors, small.identities, small.columns["is_fake"], "umap", f"UMAP, {label}", seed, f"map_umap{suffix}"))


def _grids(report: _Report, probes: emb.EmbeddingSet, gallery: emb.EmbeddingSet | None, threshold, grid_queries: int, top_k: int,
           model, gradcam: bool, seed: int) -> None:
    from petkit.evaluation import metrics as M

    probes = probes.labelled_real()
    leave_one_out = gallery is None
    gallery = probes if gallery is None else gallery.labelled_real()
    if len(probes) < 2 or len(gallery) < 2:
        report.missing("Retrieval grids", "fewer than two labelled images")
        return
    result = M.retrieval_metrics(probes.vectors, probes.identities, gallery.vectors, gallery.identities, ks=(1,), leave_one_out=leave_one_out)
    counted = np.nonzero(result.counted)[0]
    if not len(counted):
        report.missing("Retrieval grids", "no query has another image of its identity in the gallery")
        return
    ap = result.per_query["mAP"]
    worst = counted[np.argsort(ap, kind="stable")[:grid_queries]]
    rng = np.random.default_rng(seed)
    sampled = np.sort(rng.choice(counted, min(grid_queries, len(counted)), replace=False))
    _per_identity_table(report, probes.identities[counted], result.per_query["recall@1"], ap)
    probe_paths, gallery_paths = probes.absolute_paths(), gallery.absolute_paths()
    model_cams = _cam_model(report, model, gradcam)
    for key, title, picks in (("grid_worst", "Worst queries (lowest average precision)", worst),
                              ("grid_random", f"Random queries (seed {seed})", sampled)):
        rows = []
        for q in picks:
            scores = gallery.vectors @ probes.vectors[q]
            if leave_one_out:
                scores[q] = -np.inf
            order = np.argsort(-scores, kind="stable")[:top_k]
            rows.append({"query": probe_paths[q], "identity": str(probes.identities[q]),
                         "ap": float(ap[np.searchsorted(counted, q)]),
                         "matches": [{"path": gallery_paths[g], "identity": str(gallery.identities[g]), "score": float(scores[g]),
                                      "correct": bool(gallery.identities[g] == probes.identities[q])} for g in order]})
        thumbs = _thumbnails(report, [r["query"] for r in rows] + [m["path"] for r in rows for m in r["matches"]])
        cams = _cams(model_cams, rows) if model_cams is not None else None
        report.add(F.retrieval_grid(rows, thumbs, title, key, threshold, cams))


def _cam_model(report: _Report, model, gradcam: bool):
    if not gradcam:
        report.missing("Grad-CAM attention maps", "turned off (--no-gradcam)")
        return None
    if model is None:
        report.missing("Grad-CAM attention maps", "no checkpoint given (--model best.pt)")
        return None
    if str(model).endswith(".onnx"):
        report.missing("Grad-CAM attention maps", f"{model} is an ONNX model: Grad-CAM needs the checkpoint's gradients (--model best.pt)")
        return None
    from petkit.models.checkpoint import load_checkpoint

    return load_checkpoint(model).model


def _cams(model, rows: list[dict]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    from petkit.data.images import load_tensor
    from petkit.report.gradcam import similarity_cams

    size = model.card.image_size
    cams = {}
    for r, row in enumerate(rows):
        query_map, match_map = similarity_cams(model, load_tensor(row["query"], size), load_tensor(row["matches"][0]["path"], size))
        cams[r] = (query_map.numpy(), match_map.numpy())
    return cams


def _thumbnails(report: _Report, paths: list[str]) -> dict[str, np.ndarray]:
    """Resized copies (report/thumbs/) and their pixels for the grids; an unreadable photo becomes a grey square."""
    from petkit.data.images import open_rgb

    folder = report.out / "thumbs"
    out = {}
    for path in dict.fromkeys(paths):
        try:
            image = open_rgb(path, min_size=THUMB_SIZE)
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
        except PetkitError:
            from PIL import Image

            image = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE), (128, 128, 128))
        name = hashlib.sha1(path.encode()).hexdigest()[:16] + ".jpg"
        with atomic_path(folder / name) as tmp:
            image.save(tmp, format="JPEG", quality=85)
        out[path] = np.asarray(image)
    return out


def _audit(report: _Report, data: emb.EmbeddingSet, per_kind: int = 2) -> None:
    """The petkit audit checks on every photo of the embeddings file (all splits): counts, the surest pairs, a table."""
    from petkit.evaluation import audit as A

    try:
        result = A.audit(data)
    except PetkitError as error:
        report.missing("Data audit", error.message)
        return
    rows = A.rows(result, data)
    shown = [r for kind in A.KINDS for r in [r for r in rows if r["kind"] == kind][:per_kind]]
    if shown:
        root = Path(data.root)
        absolute = {r[key]: str((root / r[key]).resolve()) for r in shown for key in ("path_a", "path_b") if r[key]}
        thumbs = _thumbnails(report, list(absolute.values()))
        report.add(F.audit_pairs(shown, {p: thumbs[a] for p, a in absolute.items()}, result.counts))
    else:
        report.missing("Data audit pairs", "petkit audit found nothing at its default settings")
    listed = [r for kind in A.KINDS for r in [r for r in rows if r["kind"] == kind][:8]]
    counts = ", ".join(f"{result.counts[k]} {k}" for k in A.KINDS)
    report.tables.append((f"Data audit ({counts}; up to 8 surest of each; all in 'petkit audit')",
                          ["kind", "score", "photo", "identity", "split", "matches", "identity", "split"],
                          [[r["kind"], r["score"], r["path_a"], r["identity_a"], r["split_a"] or "-", r["path_b"] or "-",
                            r["identity_b"] or "-", r["split_b"] or "-"] for r in listed]))


def _per_identity_table(report: _Report, identities: np.ndarray, recall: np.ndarray, ap: np.ndarray) -> None:
    rows = []
    for name in np.unique(identities):
        member = identities == name
        rows.append((float(ap[member].mean()), str(name), int(member.sum()), float(recall[member].mean())))
    rows.sort()
    report.tables.append(("Per identity, worst first (leave-one-out queries)", ["identity", "queries", "Recall@1", "AP"],
                          [[name, str(n), f"{r1:.3f}", f"{a:.3f}"] for a, name, n, r1 in rows[:50]]))


def _identification(report: _Report, real: emb.EmbeddingSet, threshold, seed: int) -> None:
    from petkit.evaluation.identification import enrolment_split, open_set_scores

    names, counts = np.unique(real.identities, return_counts=True)
    if len(names) < 4:
        report.missing("Open-set and few-shot curves", f"only {len(names)} identities")
        return
    probes, enrolled = enrolment_split(real, 0.5, 1, seed)
    scores = open_set_scores(probes, enrolled)
    if scores["known"].all() or not scores["known"].any():
        report.missing("Open-set identification", "needs known and unknown probes")
    else:
        report.add(F.open_set_curve(scores["top"], scores["known"], scores["correct"], threshold))
    shots = [k for k in (1, 2, 3, 5, 10) if (counts >= k + 1).sum() >= 2]
    if not shots:
        report.missing("Few-shot enrolment curve", "no two identities with two or more images")
        return
    n_way = int(min(5, (counts >= shots[-1] + 1).sum()))
    report.add(F.few_shot_curve(real.vectors, real.identities, n_way, shots, seed=seed))


# ---------------------------------------------------------------------------------------
# files


def _write(report: _Report) -> None:
    report.progress("writing the figures and the page")
    figures = report.out / "figures"
    for plot in report.plots:
        with atomic_path(figures / f"{plot.key}.png") as tmp:
            plot.figure.savefig(tmp, format="png")
        write_json(figures / f"{plot.key}.json", {"format": "petkit.report-figure", "version": 1, "key": plot.key,
                                                   "title": plot.title, "data": _plain(plot.data)})
    from petkit.report.page import render

    write_text(report.out / INDEX, render(report, __version__))


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _sample(n: int, cap: int, seed: int) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


__all__ = ["ReportResult", "build_report"]
