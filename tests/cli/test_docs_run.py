"""Every docs/tasks page, run as a new user would: its bash block, line by line, on a tiny copy of its data layout.

The photos are real dog faces from ../shared/datasets/dogfacenet-dev when it is there, else synthetic pets;
each page's layout (identity folders, distortion/ and fake/ sub-folders, pairs files, the course challenge)
is built from them. Training lines get a one-epoch, 32 px budget appended (the page's own config and flags
stay as written); every line must exit 0 and every file it names with -o must exist afterwards.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from petkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHARED_DOGS = ROOT.parent / "shared" / "datasets" / "dogfacenet-dev"
FAST_TRAIN = ["train.epochs=1", "data.image_size=32", "train.early_stopping_patience=null", "train.device=cpu"]
# per page: what the tiny data needs on top (a P x K batch of the page's sampler must fit 8 identities)
PAGE_TRAIN = {
    "cat-faces.md": ["data.sampler.args={p: 4, k: 2}"],
    "dogs-open-set.md": ["data.sampler.args={p: 4, k: 2}"],
    "oxford-pets.md": ["data.sampler.args={p: 4, k: 2}"],
    "real-fake.md": ["data.sampler.args={p: 4, k: 2}"],
    "faces-distortion.md": ["data.sampler.args={pairs_per_batch: 4, positive_fraction: 0.5}"],
    "face-course.md": ["data.sampler.args={batch_size: 8}"],
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[list[Path]]:
    """20 individuals x 6 photos: real dog faces when available."""
    if SHARED_DOGS.is_dir():
        groups = []
        for folder in sorted(p for p in SHARED_DOGS.iterdir() if p.is_dir()):
            images = sorted(folder.glob("*.jpg"))
            if len(images) >= 6:
                groups.append(images[:6])
            if len(groups) == 20:
                return groups
    from petkit.data.synthetic import generate

    root = generate(tmp_path_factory.mktemp("docs-photos") / "pets", identities=20, images_per_identity=6, size=64, seed=4)
    return [sorted(folder.iterdir())[:6] for folder in sorted(root.iterdir())]


def copy_identities(photos, target: Path, per: int = 5, first: int = 0, count: int = 8) -> None:
    for n, group in enumerate(photos[first:first + count]):
        folder = target / f"id{first + n:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for image in group[:per]:
            shutil.copy(image, folder / image.name)


def build(page: str, photos, work: Path) -> None:
    """The data layout ``page`` starts from, in ``work`` (the user's folder)."""
    if page == "cat-faces.md":
        copy_identities(photos, work / "cats" / "train")
        (work / "cats" / "test").mkdir(parents=True)
        for n, group in enumerate(photos[8:10]):
            shutil.copy(group[5], work / "cats" / "test" / f"found{n}.jpg")
    elif page == "dogs-open-set.md":
        copy_identities(photos, work.parent / "shared" / "datasets" / "dogfacenet-dev", count=10)
        shutil.copy(photos[9][5], work / "found_dog.jpg")
    elif page == "oxford-pets.md":
        copy_identities(photos, work / "pets", count=20)  # 30 % test: 6 breeds, enough for the page's 5-way episodes
    elif page == "real-fake.md":
        copy_identities(photos, work / "people", count=20)  # the default split gives test 3 people: pairs of both kinds
        for n in range(20):  # a forgery of each person: another's photo, blurred
            fake = work / "people" / f"id{n:02d}" / "fake"
            fake.mkdir()
            for m, image in enumerate(photos[(n + 1) % 20][:2]):
                Image.open(image).convert("RGB").filter(ImageFilter.GaussianBlur(1)).save(fake / f"fake{m}.jpg")
    elif page == "faces-distortion.md":
        train = work / "faces" / "train"
        copy_identities(photos, train, per=4, count=10)
        for folder in sorted(train.iterdir()):
            (folder / "distortion").mkdir()
            for image in sorted(folder.glob("*.jpg"))[:2]:
                Image.open(image).convert("RGB").filter(ImageFilter.GaussianBlur(2)).save(folder / "distortion" / f"blur_{image.name}")
        for name, people in (("val_pairs.csv", range(0, 5)), ("test_pairs.csv", range(5, 10))):
            lines = ["pair_id,path_a,path_b,same"]
            for n in people:
                mine = sorted((train / f"id{n:02d}").glob("*.jpg"))
                other = sorted((train / f"id{(n + 1) % 10:02d}").glob("*.jpg"))
                lines += [f"p{n}s,{mine[0].relative_to(work / 'faces')},{mine[1].relative_to(work / 'faces')},1",
                          f"p{n}d,{mine[0].relative_to(work / 'faces')},{other[0].relative_to(work / 'faces')},0"]
            (work / "faces" / name).write_text("\n".join(lines) + "\n")
    elif page == "face-course.md":
        course = work / "course"
        truth = ["image,label"]
        for n, group in enumerate(photos):
            name = f"n{n + 1:06d}"
            for folder in ("unknown_dev", "unknown_test"):
                (course / folder).mkdir(parents=True, exist_ok=True)
            if n < 6:  # enrolled people
                (course / "known" / name).mkdir(parents=True)
                for image in group[:4]:
                    shutil.copy(image, course / "known" / name / image.name)
                shutil.copy(group[4], course / "unknown_dev" / f"{name}_dev.jpg")
                truth.append(f"{name}_dev.jpg,{name}")
                shutil.copy(group[5], course / "unknown_test" / f"{name}_test.jpg")
            else:  # strangers
                shutil.copy(group[0], course / "unknown_dev" / f"{name}_dev.jpg")
                truth.append(f"{name}_dev.jpg,n000000")
                shutil.copy(group[1], course / "unknown_test" / f"{name}_test.jpg")
        (course / "verification_dev.csv").write_text("\n".join(truth) + "\n")
    else:
        raise AssertionError(f"no data layout for {page}: add one here")


def page_lines(path: Path) -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("petkit ")]
    return lines


PAGES = sorted(p for p in (ROOT / "docs" / "tasks").glob("*.md") if p.name != "README.md")


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_task_page_runs_end_to_end(page, photos, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    build(page.name, photos, work)
    monkeypatch.chdir(work)
    lines = page_lines(page)
    assert lines, f"{page.name} has no petkit commands"
    for line in lines:
        argv = shlex.split(line)[1:]
        if argv[0] == "train":
            argv += [*FAST_TRAIN, *PAGE_TRAIN[page.name]]
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        output = capsys.readouterr()
        assert code == 0, f"{page.name}: `{line}` exited {code}:\n{output.err[-2000:]}"
        for flag in ("-o", "--out"):
            if flag in argv:
                target = Path(argv[argv.index(flag) + 1])
                assert target.exists(), f"{page.name}: `{line}` did not write {target}"
