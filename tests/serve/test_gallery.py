"""The gallery folder: journal replay, torn and damaged journals, compaction, index kinds, the lock."""

from __future__ import annotations

import numpy as np
import pytest

from petkit.errors import PetkitError
from petkit.serve.gallery import JOURNAL, SNAPSHOT, Gallery, photo_id


def vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ids(n: int, salt: str = "") -> list[str]:
    return [photo_id(f"{salt}{i}".encode()) for i in range(n)]


def state(gallery: Gallery) -> dict:
    return {name: gallery.photos_of(name) for name, _ in gallery.identities()}


def test_changes_survive_a_reopen_through_the_journal_alone(tmp_path):
    with Gallery.create(tmp_path / "g", "fp1", "m.pt", 8) as g:
        pass
    g = Gallery.open(tmp_path / "g", "fp1")
    v, p = vectors(5), ids(5)
    g.enrol("rex", v[:3], p[:3], [b"jpeg"] * 3)
    g.enrol("bella", v[3:], p[3:], [None, None])
    g.delete_photo(p[1])
    g.enrol("kim", v[1:2] * 0 + vectors(1, seed=9), ids(1, "k"), [None])
    g.delete_identity("kim")
    before = state(g)
    g.close()  # no compaction: everything is in the journal
    assert (tmp_path / "g" / JOURNAL).read_text().count("\n") == 5
    with Gallery.open(tmp_path / "g", "fp1") as again:
        assert state(again) == before == {"rex": [p[0], p[2]], "bella": [p[3], p[4]]}
        found = again.search(v[2:3], 2)[0]
        assert found[0].identity == "rex" and found[0].photos[0][0] == p[2] and found[0].score == pytest.approx(1.0, abs=1e-5)
        assert not (tmp_path / "g" / "thumbnails" / f"{p[1]}.jpg").exists() and (tmp_path / "g" / "thumbnails" / f"{p[0]}.jpg").exists()


def test_a_torn_last_record_is_dropped_and_a_damaged_earlier_one_refuses(tmp_path):
    folder = tmp_path / "g"
    with Gallery.create(folder, "fp1", "", 8):
        pass
    with Gallery.open(folder) as g:
        g.enrol("rex", vectors(2), ids(2), [None, None])
        g.enrol("bella", vectors(1, seed=1), ids(1, "b"), [None])
    journal = folder / JOURNAL
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"seq":3,"op":"enrol","identity":"half')  # the process died mid-write: nobody was told yes
    with Gallery.open(folder) as g:
        assert [name for name, _ in g.identities()] == ["rex", "bella"]
    assert journal.read_bytes() == good  # the torn tail went, new records start on a clean line
    lines = good.split(b"\n")
    lines[0] = lines[0].replace(b'"rex"', b'"rox"')  # the checksum no longer matches
    journal.write_bytes(b"\n".join(lines))
    with pytest.raises(PetkitError, match="damaged at line 1"):
        Gallery.open(folder)


def test_compaction_folds_the_journal_and_a_crash_before_the_reset_replays_nothing_twice(tmp_path):
    folder = tmp_path / "g"
    with Gallery.create(folder, "fp1", "", 8):
        pass
    with Gallery.open(folder) as g:
        g.enrol("rex", vectors(3), ids(3), [None] * 3)
        journal = (folder / JOURNAL).read_bytes()
        g.compact()
        assert (folder / JOURNAL).read_bytes() == b"" and g.journal_records == 0
        g.enrol("bella", vectors(1, seed=2), ids(1, "b"), [None])
    (folder / JOURNAL).write_bytes(journal + (folder / JOURNAL).read_bytes())  # as if the reset never happened
    with Gallery.open(folder) as g:
        assert state(g) == {"rex": ids(3), "bella": ids(1, "b")} and len(g) == 4


def test_a_photo_cannot_belong_to_two_identities_and_a_repeat_is_kept_once(tmp_path):
    with Gallery.create(tmp_path / "g", "fp1", "", 8) as g:
        pass
    with Gallery.open(tmp_path / "g") as g:
        v, p = vectors(2), ids(2)
        assert [e.created for e in g.enrol("rex", v, p, [None, None])] == [True, True]
        assert [e.created for e in g.enrol("rex", np.concatenate([v[:1], v[:1]]), [p[0], p[0]], [None, None])] == [False, False]
        with pytest.raises(PetkitError, match="already enrolled as rex"):
            g.enrol("bella", v[1:], p[1:], [None])
        assert len(g) == 2 and g.journal_records == 1
        with pytest.raises(PetkitError, match="not a valid name"):
            g.enrol("../x", v[:1], ids(1, "z"), [None])
        with pytest.raises(PetkitError, match="NaN"):
            g.enrol("nan", np.full((1, 8), np.nan, dtype=np.float32), ids(1, "n"), [None])


def test_one_process_serves_a_gallery_and_another_models_is_refused(tmp_path):
    with Gallery.create(tmp_path / "g", "fp1", "", 8):
        pass
    with Gallery.open(tmp_path / "g", "fp1"):
        with pytest.raises(PetkitError, match="in use by another petkit serve"):
            Gallery.open(tmp_path / "g", "fp1")
        assert Gallery.describe(tmp_path / "g")["photos"] == 0  # a read-only look is fine meanwhile
    with pytest.raises(PetkitError, match="holds embeddings of model fp1, not of this model"):
        Gallery.open(tmp_path / "g", "fp2")
    with pytest.raises(PetkitError, match="not a petkit gallery"):
        Gallery.open(tmp_path / "nothing")
    (tmp_path / "g" / SNAPSHOT).write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(PetkitError, match="cannot read gallery snapshot"):
        Gallery.open(tmp_path / "g")


def test_an_ivf_gallery_removes_for_real_and_agrees_with_exact_search(tmp_path):
    """An inverted file at its default nprobe against the flat index, on clustered vectors like identities."""
    rng = np.random.default_rng(0)
    centres = vectors(400, 32, seed=1)
    members = np.repeat(np.arange(400), 10)
    data = centres[members] + 0.15 * rng.normal(size=(4000, 32)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    names = [f"id{m}" for m in members]
    photos = ids(4000)
    results = {}
    for kind in ("flat", "ivf"):
        folder = tmp_path / kind
        with Gallery.create(folder, "fp1", "", 32):
            pass
        with Gallery.open(folder, index_kind=kind) as g:
            for start in range(0, 4000, 10):
                g.enrol(names[start], data[start:start + 10], photos[start:start + 10], [None] * 10)
            g.compact()  # the ivf index is trained on what is there
            assert g.kind == kind
            g.delete_identity("id7")
            queries = data[::37]
            results[kind] = [[c.identity for c in row] for row in g.search(queries, 5)]
            assert all("id7" not in row for row in results[kind])
    agree = np.mean([a[0] == b[0] for a, b in zip(results["flat"], results["ivf"])])
    assert agree >= 0.95, agree
