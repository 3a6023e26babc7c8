"""The report's figures: each function returns the figure's data (plain, JSON-ready: the plotted
points) and draws it on a matplotlib ``Figure`` (Agg canvas, no pyplot state).

The data comes from the same metric functions as metrics.json (petkit.evaluation.metrics and
the evaluators' pair helpers), so a plot cannot drift from the numbers beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from petkit.evaluation import metrics as M

CURVE_POINTS = 2000  # ROC/DET points kept for the plot and its JSON (a subset of the metric's own points)
HIST_BINS = 60  # at most; fewer for small groups (about 2 sqrt(n)) so a histogram of 50 pairs is not all spikes
COLOURED_IDENTITIES = 10  # the largest identities get a colour on the embedding maps; the rest are grey


@dataclass
class Plot:
    """One figure: its file stem, title, the one-line caption saying how to read it, data and drawing."""

    key: str
    title: str
    caption: str
    data: dict[str, Any]
    figure: Figure
    extra: dict[str, Any] = field(default_factory=dict)


def new_figure(width: float = 7.0, height: float = 4.2) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return figure


def _bins(*groups: np.ndarray) -> int:
    smallest = min((len(g) for g in groups if len(g)), default=1)
    return int(np.clip(2 * np.sqrt(smallest), 10, HIST_BINS))


def _finite(text) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


def _thin(n: int, keep: int = CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``keep`` points along a curve of ``n``, first and last included."""
    if n <= keep:
        return np.arange(n)
    return np.unique(np.r_[np.linspace(0, n - 1, keep).round().astype(int), n - 1])


# ---------------------------------------------------------------------------------------
# training


def training_curves(history: list[dict[str, str]], steps: list[dict[str, str]], val_metric: str, stop: str) -> Plot:
    """Loss and learning rate per step (steps.csv) and per epoch, val metrics per epoch, best and stop marked."""
    epochs = [int(r["epoch"]) for r in history]
    def column(name):
        return [float(r[name]) if _finite(r.get(name)) else None for r in history]
    val_columns = [k for k in (history[0].keys() if history else []) if k.startswith("val_") and any(_finite(r.get(k)) for r in history)]
    metric_key = f"val_{val_metric}"
    values = column(metric_key) if metric_key in val_columns else []
    trained = [(e, v) for e, v in zip(epochs, values) if e > 0 and v is not None and not math.isnan(v)]
    best = max(trained, key=lambda item: item[1])[0] if trained else None
    data = {
        "epochs": epochs, "train_loss": column("train_loss"), "lr": column("lr"),
        "val": {k: column(k) for k in val_columns}, "val_metric": metric_key, "best_epoch": best, "stop": stop,
        "steps": {"step": [int(r["step"]) for r in steps], "loss": [float(r["loss"]) for r in steps], "lr": [float(r["lr"]) for r in steps]},
    }
    figure = new_figure(10, 3.6)
    loss_ax, lr_ax, val_ax = figure.subplots(1, 3)
    if steps:
        per_epoch = max(1, len(steps) // max(1, max(epochs)))
        loss_ax.plot(data["steps"]["step"], data["steps"]["loss"], lw=0.6, alpha=0.45, label="per batch")
        loss_ax.plot([e * per_epoch for e in epochs if e > 0], [v for e, v in zip(epochs, data["train_loss"]) if e > 0], "o-",
                     label="epoch mean")
        loss_ax.set_xlabel("step")
        lr_ax.plot(data["steps"]["step"], data["steps"]["lr"])
        lr_ax.set_xlabel("step")
    else:
        loss_ax.plot(epochs, data["train_loss"], "o-", label="epoch mean")
        lr_ax.plot(epochs, data["lr"], "o-")
        loss_ax.set_xlabel("epoch")
        lr_ax.set_xlabel("epoch")
    loss_ax.set_title("train loss")
    loss_ax.legend(fontsize=7)
    lr_ax.set_title("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for key in val_columns:
        series = data["val"][key]
        if key == metric_key or key in ("val_recall@1", "val_mAP@R", "val_accuracy"):
            val_ax.plot(epochs, [np.nan if v is None else v for v in series], "o-", ms=3, label=key[4:], lw=2 if key == metric_key else 1)
    if best is not None:
        val_ax.axvline(best, color="green", ls="--", lw=1)
        val_ax.annotate("best", (best, val_ax.get_ylim()[1]), color="green", fontsize=8, ha="center", va="bottom")
    if stop:
        val_ax.axvline(epochs[-1], color="red", ls=":", lw=1)
        val_ax.annotate("stopped", (epochs[-1], val_ax.get_ylim()[0]), color="red", fontsize=8, ha="right", va="bottom")
    val_ax.set_title("validation (epoch 0 = untrained)")
    val_ax.set_xlabel("epoch")
    if val_columns:
        val_ax.legend(fontsize=7)
    caption = ("Loss and learning rate per batch (steps.csv) and per epoch; the val metrics per epoch with the best epoch "
               "(green) and an early stop (red). A val curve that falls while the loss falls is overfitting.")
    return Plot("training", "Training curves", caption, data, figure)


# ---------------------------------------------------------------------------------------
# verification


def roc_det(scores: np.ndarray, same: np.ndarray, fars: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)) -> Plot:
    """ROC with FAR on a log axis (EER point, TAR@FAR marks) and the DET curve (miss vs false alarm)."""
    fpr, tpr, thresholds = M.roc_curve(scores, same)
    eer, eer_threshold = M.equal_error_rate(scores, same)
    marks = [{"far": far, "tar": tar, "threshold": thr} for far, tar, thr in M.tar_at_far(scores, same, fars)]
    keep = _thin(len(fpr))
    data = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "thresholds": [float(t) if np.isfinite(t) else None for t in thresholds[keep]],
            "indices": keep.tolist(), "eer": eer, "eer_threshold": eer_threshold, "tar_at_far": marks, "roc_auc": M.roc_auc(scores, same),
            "pairs": int(len(scores)), "positive_pairs": int(same.sum()), "negative_pairs": int((~same).sum())}
    figure = new_figure(9, 3.8)
    roc, det = figure.subplots(1, 2)
    floor = 1.0 / max(1, data["negative_pairs"])
    roc.plot(np.maximum(fpr[keep], floor), tpr[keep], lw=1.5)
    roc.plot([eer], [1 - eer], "o", color="black", label=f"EER {eer:.3f}")
    for mark in marks:
        if mark["far"] >= floor:
            roc.plot([mark["far"]], [mark["tar"]], "s", ms=5, label=f"TAR@FAR={mark['far']:g}: {mark['tar']:.3f}")
    roc.set_xscale("log")
    roc.set_xlim(floor, 1)
    roc.set_ylim(0, 1.01)
    roc.set_xlabel("false accept rate (log)")
    roc.set_ylabel("true accept rate")
    roc.set_title(f"ROC (AUC {data['roc_auc']:.3f})")
    roc.legend(fontsize=7, loc="lower right")
    from scipy.stats import norm  # the DET axes are normal deviates (Martin et al., 1997)

    clip = lambda p: np.clip(p, 1e-5, 1 - 1e-5)  # noqa: E731
    det.plot(norm.ppf(clip(fpr[keep])), norm.ppf(clip(1 - tpr[keep])), lw=1.5)
    det.plot(norm.ppf(clip(np.array([eer]))), norm.ppf(clip(np.array([eer]))), "o", color="black", label=f"EER {eer:.3f}")
    ticks = [0.001, 0.01, 0.1, 0.5, 0.9]
    det.set_xticks(norm.ppf(ticks), [f"{t:.0%}" if t >= 0.01 else f"{t:.1%}" for t in ticks])
    det.set_yticks(norm.ppf(ticks), [f"{t:.0%}" if t >= 0.01 else f"{t:.1%}" for t in ticks])
    det.set_xlim(norm.ppf(0.0005), norm.ppf(0.95))
    det.set_ylim(norm.ppf(0.0005), norm.ppf(0.95))
    det.set_xlabel("false accept rate")
    det.set_ylabel("false reject rate")
    det.set_title("DET")
    det.legend(fontsize=7)
    caption = ("Verification of every same/different pair: higher ROC and lower DET are better; the dot is the equal error rate, "
               "the squares the true accept rate at fixed false accept rates.")
    return Plot("roc_det", "ROC and DET", caption, data, figure)


def similarity_histograms(scores: np.ndarray, same: np.ndarray, thresholds: list[tuple[str, float]]) -> Plot:
    """Genuine vs impostor similarity histograms with the calibrated and any fixed thresholds drawn."""
    edges = np.linspace(max(-1.0, float(scores.min())), 1.0, _bins(scores[same], scores[~same]) + 1)
    genuine, _ = np.histogram(scores[same], bins=edges)
    impostor, _ = np.histogram(scores[~same], bins=edges)
    data = {"edges": edges.tolist(), "genuine": genuine.tolist(), "impostor": impostor.tolist(),
            "thresholds": [{"label": label, "value": value} for label, value in thresholds]}
    figure = new_figure(7, 3.6)
    ax = figure.subplots()
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    ax.bar(centres, genuine / max(1, genuine.sum()), width=width, alpha=0.6, label=f"genuine ({int(same.sum())} pairs)")
    ax.bar(centres, impostor / max(1, impostor.sum()), width=width, alpha=0.6, label=f"impostor ({int((~same).sum())} pairs)")
    for (label, value), colour in zip(thresholds, ("black", "purple", "brown", "grey")):
        ax.axvline(value, color=colour, ls="--", lw=1.2, label=f"{label}: {value:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("share of pairs")
    ax.set_title("Genuine vs impostor similarity")
    ax.legend(fontsize=7)
    caption = ("Similarity of pairs of the same individual (genuine) and of two individuals (impostor), each normalised: "
               "the less they overlap the better; pairs right of a threshold are accepted as a match.")
    return Plot("similarity_histograms", "Similarity histograms", caption, data, figure)


def real_fake_histograms(pairs: dict, eers: dict[str, float]) -> Plot:
    """Distances anchor-positive, anchor-negative (real) and anchor-fake, eer_real / eer_fake in the legend."""
    real, fake = pairs["real"], pairs["fake"]
    distance = lambda s: np.sqrt(np.clip(2.0 - 2.0 * s, 0, None))  # noqa: E731  (unit vectors: |a - b|^2 = 2 - 2 cos)
    groups = {"anchor-positive": distance(real.scores[real.same]), "anchor-negative (real)": distance(real.scores[~real.same]),
              "anchor-fake": distance(fake.scores[~fake.same])}
    edges = np.linspace(0, 2, _bins(*groups.values()) + 1)
    counts = {name: np.histogram(values, bins=edges)[0].tolist() for name, values in groups.items()}
    data = {"edges": edges.tolist(), "counts": counts, "eer_real": eers["real"], "eer_fake": eers["fake"],
            "pairs": {name: int(len(values)) for name, values in groups.items()}}
    figure = new_figure(7, 3.6)
    ax = figure.subplots()
    centres = (edges[:-1] + edges[1:]) / 2
    for name, colour in zip(counts, ("tab:green", "tab:blue", "tab:red")):
        total = max(1, sum(counts[name]))
        ax.plot(centres, np.array(counts[name]) / total, color=colour, lw=1.8, label=f"{name} ({data['pairs'][name]})")
    ax.plot([], [], " ", label=f"eer_real {eers['real']:.4f}, eer_fake {eers['fake']:.4f}")
    ax.set_xlabel("Euclidean distance between embeddings")
    ax.set_ylabel("share of pairs")
    ax.set_title("Real vs fake distances")
    ax.legend(fontsize=7)
    caption = ("Distances from an anchor to another photo of it, to another individual and to a fake of it: a fake-aware "
               "model pushes the red curve right of the green one (eer_fake falls).")
    return Plot("real_fake", "Real vs fake distances", caption, data, figure)


# ---------------------------------------------------------------------------------------
# embedding maps


def embedding_map(vectors: np.ndarray, identities: np.ndarray, is_fake: np.ndarray, method: str, title: str, seed: int = 0,
                  key: str | None = None) -> Plot:
    """2-D map (pca | tsne | umap) coloured by identity for the largest identities; fakes and unknowns marked."""
    if method == "pca":
        from sklearn.decomposition import PCA

        points = PCA(n_components=2, random_state=seed).fit_transform(vectors)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        points = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, max(2.0, (len(vectors) - 1) / 3))).fit_transform(vectors)
    else:
        import umap  # the optional extra petkit[umap]

        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors)
    names, counts = np.unique(identities[identities != ""], return_counts=True)
    largest = [str(n) for n in names[np.argsort(-counts, kind="stable")][:COLOURED_IDENTITIES]]
    data = {"method": method, "points": np.round(points, 5).tolist(), "identities": identities.tolist(),
            "is_fake": (is_fake == "1").tolist(), "coloured": largest}
    figure = new_figure(5.2, 4.6)
    ax = figure.subplots()
    real, fake, unknown = (is_fake != "1") & (identities != ""), is_fake == "1", identities == ""
    others = real & ~np.isin(identities, largest)
    ax.scatter(points[others, 0], points[others, 1], s=6, c="lightgrey", label="other identities")
    for i, name in enumerate(largest):
        member = real & (identities == name)
        ax.scatter(points[member, 0], points[member, 1], s=12, color=f"C{i}", label=name[:18])
    if fake.any():
        ax.scatter(points[fake, 0], points[fake, 1], s=22, marker="x", c="red", label="fake")
    if unknown.any():
        ax.scatter(points[unknown, 0], points[unknown, 1], s=14, marker="^", facecolors="none", edgecolors="black", label="unlabelled")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=6, loc="best", markerscale=1.2, ncol=2)
    caption = (f"{method.upper()} map of {len(vectors)} embeddings: photos of one individual should form a tight cluster of one "
               f"colour (the {len(largest)} largest identities are coloured, fakes are red crosses).")
    return Plot(key or f"map_{method}", title, caption, data, figure)


# ---------------------------------------------------------------------------------------
# retrieval grids and attention


def retrieval_grid(rows: list[dict], thumbs: dict[str, np.ndarray], title: str, key: str, threshold: float | None,
                   cams: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> Plot:
    """Query thumbnail + top-k gallery thumbnails, green/red frames, similarity printed, 'unknown' below the threshold;
    with ``cams`` the query and its top match carry their Grad-CAM maps."""
    k = max(len(r["matches"]) for r in rows) if rows else 0
    columns = k + 1 + (2 if cams else 0)
    figure = new_figure(1.25 * columns, 1.45 * max(1, len(rows)))
    axes = np.atleast_2d(figure.subplots(max(1, len(rows)), columns, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r, row in enumerate(rows):
        ax = axes[r, 0]
        ax.imshow(thumbs[row["query"]])
        ax.set_title(f"query\n{row['identity'][:14]}", fontsize=6)
        unknown = threshold is not None and row["matches"] and row["matches"][0]["score"] < threshold
        for c, match in enumerate(row["matches"], start=1):
            ax = axes[r, c]
            ax.imshow(thumbs[match["path"]])
            colour = "green" if match["correct"] else "red"
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(colour)
                spine.set_linewidth(2.5)
            label = "unknown\n" if unknown and c == 1 else ""
            ax.set_title(f"{label}{match['identity'][:12]}\n{match['score']:.3f}", fontsize=6, color=colour)
        if cams and r in cams:
            query_map, match_map = cams[r]
            for offset, (path, heat, name) in enumerate(((row["query"], query_map, "query"), (row["matches"][0]["path"], match_map, "top match"))):
                ax = axes[r, k + 1 + offset]
                ax.imshow(thumbs[path])
                ax.imshow(heat, cmap="jet", alpha=0.45, extent=(-0.5, thumbs[path].shape[1] - 0.5, thumbs[path].shape[0] - 0.5, -0.5))
                ax.set_title(f"Grad-CAM\n{name}", fontsize=6)
    data = {"rows": rows, "threshold": threshold, "gradcam": bool(cams)}
    caption = ("Each row: a query and its top matches, framed green when the identity is right and red when wrong, with "
               "the cosine similarity; 'unknown' marks a best match below the threshold."
               + (" The last two images show where the query and its top match drove their similarity (Grad-CAM)." if cams else ""))
    return Plot(key, title, caption, data, figure)


# ---------------------------------------------------------------------------------------
# identification


def open_set_curve(top: np.ndarray, known: np.ndarray, correct: np.ndarray, threshold: float | None) -> Plot:
    """DIR vs FPIR over a grid of FPIR targets (each threshold set on the unknown probes), the chosen threshold marked."""
    unknown = int((~known).sum())
    grid = np.unique(np.r_[np.logspace(np.log10(max(1.0 / max(unknown, 1), 1e-4)), 0, 40), 1.0])
    results = M.dir_at_fpir(top, known, correct, tuple(float(f) for f in grid))
    data = {"fpir": [r.fpir for r in results], "dir": [r.dir for r in results], "thresholds": [r.threshold for r in results],
            "achieved_fpir": [r.achieved_fpir for r in results], "known_probes": int(known.sum()), "unknown_probes": unknown}
    figure = new_figure(6, 3.6)
    ax = figure.subplots()
    ax.plot(data["achieved_fpir"], data["dir"], "o-", ms=2)
    if threshold is not None:
        fpir = M.acceptance_rate(top[~known], threshold)
        dir_ = float((correct[known] & (top[known] >= threshold)).mean()) if known.any() else float("nan")
        data["chosen"] = {"threshold": threshold, "fpir": fpir, "dir": dir_}
        ax.plot([max(fpir, 1e-4)], [dir_], "s", color="black", label=f"threshold {threshold:.3f}: DIR {dir_:.3f} at FPIR {fpir:.3f}")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("false positive identification rate (unknown probes accepted)")
    ax.set_ylabel("detection and identification rate")
    ax.set_title("Open-set identification")
    caption = ("How many enrolled animals are found (DIR) as the share of never-enrolled ones wrongly matched (FPIR) is allowed "
               "to grow; the square is the threshold in use.")
    return Plot("open_set", "Open-set identification", caption, data, figure)


def few_shot_curve(vectors: np.ndarray, labels: np.ndarray, n_way: int, shots: list[int], episodes: int = 300, seed: int = 0) -> Plot:
    """N-way K-shot accuracy as the number of enrolled photos K grows (the enrolment curve)."""
    results = [M.few_shot_accuracy(vectors, labels, n_way, k, 1, episodes, seed) for k in shots]
    data = {"n_way": n_way, "k_shot": shots, "accuracy": [r.mean for r in results], "ci95_half": [r.ci95 for r in results],
            "episodes": episodes}
    figure = new_figure(5.5, 3.4)
    ax = figure.subplots()
    ax.errorbar(shots, data["accuracy"], yerr=[0 if math.isnan(h) else h for h in data["ci95_half"]], fmt="o-", capsize=3)
    ax.axhline(1.0 / n_way, color="grey", ls=":", label=f"chance (1/{n_way})")
    ax.set_xlabel("enrolled photos per individual (K)")
    ax.set_ylabel(f"{n_way}-way accuracy")
    ax.set_xticks(shots)
    ax.set_ylim(0, 1.02)
    ax.set_title("Few-shot enrolment curve")
    ax.legend(fontsize=7)
    caption = f"{n_way}-way accuracy when each individual is enrolled with K photos (95 % interval over {episodes} episodes)."
    return Plot("few_shot", "Few-shot enrolment", caption, data, figure)


# ---------------------------------------------------------------------------------------
# data audit

AUDIT_TITLES = {"mislabel": "likely mislabel", "split_leak": "leak across splits", "identity_duplicate": "same photo, two names",
                "same_animal": "same animal, two names"}


def audit_pairs(rows: list[dict], thumbs: dict[str, np.ndarray], counts: dict[str, int]) -> Plot:
    """The surest findings of each audit check as photo pairs: the flagged photo and the one it matches."""
    columns = 4  # two findings (two photos each) per line
    lines = max(1, -(-len(rows) // 2))
    figure = new_figure(1.6 * columns, 1.75 * lines)
    axes = np.atleast_2d(figure.subplots(lines, columns, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for n, row in enumerate(rows):
        for side, (path, identity, split) in enumerate(((row["path_a"], row["identity_a"], row["split_a"]),
                                                        (row["path_b"], row["identity_b"], row["split_b"]))):
            ax = axes[n // 2, (n % 2) * 2 + side]
            if not path:
                continue
            ax.imshow(thumbs[path])
            ax.set_axis_on()
            ax.set_xticks([])
            ax.set_yticks([])
            heading = f"{AUDIT_TITLES[row['kind']]} {row['score']}\n" if side == 0 else "\n"
            ax.set_title(f"{heading}{identity[:14]} ({split or '-'})", fontsize=6)
    data = {"counts": counts, "rows": rows}
    caption = ("Found by petkit audit from the embeddings, surest first: " + ", ".join(f"{counts[k]} {AUDIT_TITLES[k]}" for k in counts)
               + ". Each pair: the flagged photo (its identity and split) and the photo it matches best. A likely mislabel's "
               "partner is from the identity that matches it better than its own; check these before trusting the scores.")
    return Plot("audit", "Data audit", caption, data, figure)
