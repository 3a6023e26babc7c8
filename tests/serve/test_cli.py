"""petkit gallery init|info|compact and petkit serve's start-up refusals, as a user types them."""

from __future__ import annotations

import pytest

from petkit.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_gallery_init_from_an_index_keeps_its_threshold_and_info_shows_it(seed_embeddings, tmp_path, capsys):
    from petkit import embeddings as emb
    from petkit.retrieval.index import GalleryIndex

    data = emb.load(seed_embeddings)
    index = GalleryIndex(data.vectors, data.identities, fingerprint=data.fingerprint,
                         calibration={"threshold": 0.42, "source": "calibration.json (FAR 0.01, open_set)"})
    index.save(tmp_path / "g.index")
    code, out, err = run(["gallery", "init", str(tmp_path / "reg"), "--from", str(tmp_path / "g.index")], capsys)
    assert code == 0, err
    assert "24 photos of 8 identities" in out and "threshold 0.4200" in out
    assert "24 photos have no thumbnail" in err  # an index built in memory records no photo files
    code, out, _ = run(["gallery", "info", str(tmp_path / "reg")], capsys)
    assert code == 0 and "0.42" in out and "identities" in out
    code, _, err = run(["gallery", "init", str(tmp_path / "reg"), "--from", str(tmp_path / "g.index")], capsys)
    assert code == 2 and "already holds a gallery" in err


def test_gallery_init_from_embeddings_checks_the_model_and_names_photos_by_content(seed_embeddings, tiny_model, tmp_path, capsys):
    from petkit.serve.gallery import Gallery

    code, out, err = run(["gallery", "init", str(tmp_path / "reg"), "--from", str(seed_embeddings), "--model", str(tiny_model)], capsys)
    assert code == 0, err
    info = Gallery.describe(tmp_path / "reg")
    assert info["photos"] == 24 and len(list((tmp_path / "reg" / "thumbnails").glob("*.jpg"))) == 24
    code, _, err = run(["gallery", "init", str(tmp_path / "none"), "--from", str(tmp_path / "missing.npz")], capsys)
    assert code == 2 and "not found" in err and not (tmp_path / "none" / "snapshot.npz").exists()
    code, _, err = run(["gallery", "init", str(tmp_path / "none")], capsys)
    assert code == 2 and "nothing to make the gallery from" in err


def test_serve_refuses_to_start_with_one_line(gallery_dir, tiny_model, tmp_path, capsys):
    code, _, err = run(["serve", "--gallery", str(tmp_path / "nowhere"), "--model", str(tiny_model), "--threshold", "0.5"], capsys)
    assert code == 2 and "not a petkit gallery" in err and "Traceback" not in err
    code, _, err = run(["serve", "--gallery", str(gallery_dir), "--model", str(tiny_model)], capsys)
    assert code == 2 and "no threshold" in err
    (tmp_path / "key.txt").write_text("short\n")
    code, _, err = run(["serve", "--gallery", str(gallery_dir), "--threshold", "0.5", "--api-key-file", str(tmp_path / "key.txt")], capsys)
    assert code == 2 and "shorter than 16" in err
    code, _, err = run(["serve", "--gallery", str(gallery_dir), "--threshold", "2"], capsys)
    assert code == 2 and "[-1, 1]" in err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(["serve", "--gallery", str(gallery_dir), "--threshold", "0.5", "--port", str(port)], capsys)
    assert code == 2 and "cannot listen on 127.0.0.1" in err
    assert not (gallery_dir / ".lock").exists()  # the lock went with the refusal
