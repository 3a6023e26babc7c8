import pytest

from petkit.data import manifest as mf
from petkit.errors import PetkitError


def test_round_trip_keeps_rows_and_columns(tmp_path):
    rows = [{"path": "a/1.jpg", "identity": "a", "split": "train"}, {"path": "b/1.jpg", "identity": "b", "split": "val"}]
    path = tmp_path / "manifest.csv"
    for row in rows:
        (tmp_path / row["path"]).parent.mkdir(exist_ok=True)
        (tmp_path / row["path"]).touch()
    mf.write_manifest(path, rows, ["path", "identity", "split"])
    assert path.read_text().startswith("# petkit-manifest v1\n")
    loaded = mf.read_manifest(path)
    assert loaded.rows == rows
    assert loaded.abspath(loaded.rows[0]) == tmp_path.resolve() / "a/1.jpg"
    assert [r["identity"] for r in loaded.select("val").rows] == ["b"]


def test_hand_written_manifest_without_header_line(tmp_path):
    path = tmp_path / "m.csv"
    (tmp_path / "x.jpg").touch()
    path.write_text("path,identity,is_fake\nx.jpg,cat1,true\n")
    assert mf.read_manifest(path).rows[0]["is_fake"] == "1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,name\nx.jpg,a\n", "lacks the required column\\(s\\) identity"),
        ("path,identity,split\nx.jpg,a,training\n", "line 2: split is 'training'"),
        ("path,identity\nx.jpg,\n", "line 2: empty 'identity'"),
        ("path,identity\n", "lists no images"),
        ("path,identity\nx.jpg,a,extra\n", "line 2: 3 fields, but the header has 2 columns"),
        ("# petkit-manifest v9\npath,identity\nx.jpg,a\n", "manifest version 9"),
    ],
)
def test_malformed_manifests_fail_with_the_line(tmp_path, text, message):
    path = tmp_path / "m.csv"
    (tmp_path / "x.jpg").touch()
    path.write_text(text)
    with pytest.raises(PetkitError, match=message):
        mf.read_manifest(path)


def test_missing_manifest(tmp_path):
    with pytest.raises(PetkitError, match="manifest not found"):
        mf.read_manifest(tmp_path / "none.csv")
