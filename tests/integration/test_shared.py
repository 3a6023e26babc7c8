"""Integration on real faces from ../shared/datasets (skipped where that folder is absent)."""

import pytest

from petkit.config import resolve
from petkit.data.prepare import PrepareOptions, prepare
from petkit.engine.trainer import train
from tests.conftest import SHARED_DATASETS

ATT = SHARED_DATASETS / "att_faces"


@pytest.mark.integration
@pytest.mark.skipif(not ATT.is_dir(), reason="../shared/datasets/att_faces is absent (a fresh clone has no ../shared)")
def test_training_beats_the_untrained_model_on_att_faces(tmp_path):
    prepared = prepare(ATT, tmp_path / "data", PrepareOptions(ratios=(0.6, 0.4, 0.0), seed=0))
    summary = prepared.report["summary"]
    assert summary["identities"] == 40 and summary["images"] == 400  # grayscale PGM read as RGB
    assert {s["path"] for s in prepared.report["skipped"]} == {"README.orig"}
    config = resolve(None, [
        f"data.manifest={prepared.manifest_path}", f"output_dir={tmp_path / 'runs'}", "name=att",
        "data.image_size=64", "model.backbone.args.model=resnet10t", "data.sampler.args.p=8",
        "train.epochs=6", "train.early_stopping_patience=null",
    ])
    history = train(config).history
    # AT&T faces are easy: even random features give high Recall@1, so judge by mAP@R (all R matches)
    untrained = history[0]["val_mAP@R"]
    best = max(row["val_mAP@R"] for row in history[1:])
    assert history[0]["epoch"] == 0
    assert best > untrained + 0.05, f"val mAP@R untrained {untrained:.3f}, best trained {best:.3f}"


@pytest.mark.integration
@pytest.mark.skipif(not ATT.is_dir(), reason="../shared/datasets/att_faces is absent (a fresh clone has no ../shared)")
def test_pairs_threshold_calibrated_on_some_people_holds_on_others(tmp_path):
    """Real faces: a 1:1 threshold for FAR 5 % set on 10 unseen people, checked on 10 others."""
    import numpy as np

    from petkit import embeddings as emb
    from petkit.engine.embedder import embed
    from petkit.evaluation import metrics as M
    from petkit.retrieval.calibration import calibrate

    prepared = prepare(ATT, tmp_path / "data", PrepareOptions(ratios=(0.5, 0.25, 0.25), seed=1))
    config = resolve(None, [
        f"data.manifest={prepared.manifest_path}", f"output_dir={tmp_path / 'runs'}", "name=att",
        "data.image_size=64", "model.backbone.args.model=resnet10t", "data.sampler.args.p=8", "train.epochs=4",
    ])
    data = embed(train(config).best_checkpoint, prepared.manifest_path)
    emb.save(tmp_path / "all.npz", data)
    document = calibrate(tmp_path / "all.npz", 0.05, split="val", mode="pairs")
    assert document["achieved_far"] <= 0.05
    test = data.where("splits", "test")
    scores, same, _ = M.verification_pairs(test.vectors, test.identities)
    achieved = M.acceptance_rate(scores[~same], document["threshold"])
    assert 0.05 / 3 <= achieved <= 0.05 * 3, f"FAR {achieved:.4f} on the test people for a 5 % calibration"
    assert len(set(test.identities)) == 10 and np.all(test.columns["splits"] == "test")


@pytest.mark.integration
@pytest.mark.skipif(not ATT.is_dir(), reason="../shared/datasets/att_faces is absent (a fresh clone has no ../shared)")
def test_course_challenge_on_real_faces_through_the_cli(tmp_path):
    """The course layout built from AT&T faces: 20 enrolled people, dev and test strangers; both submissions."""
    import csv
    import shutil

    from typer.testing import CliRunner

    from petkit.cli import _register_commands, app

    _register_commands()
    course, truth = tmp_path / "course", ["image,label"]
    answers = {}
    for n in range(1, 41):
        person, images = f"s{n}", sorted((ATT / f"s{n}").glob("*.pgm"), key=lambda p: int(p.stem))
        if n <= 20:
            (course / "known" / person).mkdir(parents=True)
            for image in images[:6]:
                shutil.copy(image, course / "known" / person / image.name)
            dev, test = images[6:8], images[8:10]
        else:
            dev, test = (images[:2], []) if n <= 30 else ([], images[2:4])
        for image in dev:
            (course / "unknown_dev").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, course / "unknown_dev" / f"{person}_{image.name}")
            truth.append(f"{person}_{image.name},{person if n <= 20 else 'n000000'}")
        for image in test:
            (course / "unknown_test").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, course / "unknown_test" / f"{person}_{image.name}")
            answers[f"{person}_{image.name}"] = person if n <= 20 else "n000000"
    (course / "verification_dev.csv").write_text("\n".join(truth) + "\n")

    def run(*args):
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("prepare", course, "-o", tmp_path / "data")
    run("train", "--manifest", tmp_path / "data" / "manifest.csv", "--output-dir", tmp_path / "runs", "--name", "course", "--epochs", "6",
        "--image-size", "64", "model.backbone.args.model=resnet10t", "data.sampler.args.p=8")
    run("embed", tmp_path / "runs" / "course" / "best.pt", tmp_path / "data" / "manifest.csv", "-o", tmp_path / "all.npz")
    run("calibrate", tmp_path / "all.npz", "--split", "val", "--gallery-split", "train", "--far", "0.1")
    for fmt in ("classification", "open_set"):
        run("submit", tmp_path / "all.npz", "--query-split", "test", "--gallery-split", "train", "--format", fmt, "-o", tmp_path / f"{fmt}.csv")
    closed = dict(list(csv.reader((tmp_path / "classification.csv").open()))[1:])
    opened = dict(list(csv.reader((tmp_path / "open_set.csv").open()))[1:])
    assert set(closed) == set(opened) == set(answers)  # every test image exactly once
    enrolled = [name for name, person in answers.items() if person != "n000000"]
    strangers = [name for name in answers if name not in enrolled]
    accuracy = sum(closed[name] == answers[name] for name in enrolled) / len(enrolled)
    rejected = sum(opened[name] == "n000000" for name in strangers) / len(strangers)
    print(f"course on AT&T: closed-set accuracy {accuracy:.3f}, strangers answered n000000 {rejected:.3f}")
    assert accuracy >= 0.6 and rejected >= 0.5, (accuracy, rejected)
