"""Every endpoint of petkit serve and every refusal, through FastAPI's test client (no 500 anywhere)."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from petkit.errors import PetkitError


def photo(pets_dir, pet: int, n: int):
    return sorted(sorted(pets_dir.iterdir())[pet].iterdir())[n]


def upload(*paths_or_bytes):
    files = []
    for n, item in enumerate(paths_or_bytes):
        data = item if isinstance(item, bytes) else item.read_bytes()
        files.append(("photos", (f"p{n}.jpg", data, "image/jpeg")))
    return files


def content_id(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:32]


def test_health_names_the_model_gallery_and_threshold(client, tiny_model):
    from petkit.models.checkpoint import load_checkpoint

    c, _ = client
    health = c.get("/v1/health").json()
    assert health["model"]["fingerprint"] == load_checkpoint(tiny_model).fingerprint
    assert health["gallery"] == {"photos": 24, "identities": 8, "index": "flat"}
    assert health["threshold"]["value"] == 0.9 and health["threshold"]["source"] == "--threshold"


def test_an_enrolled_photo_finds_its_identity_and_thumbnail_first(client, pets_dir):
    c, _ = client
    image = photo(pets_dir, 2, 1)
    answer = c.post("/v1/identify", files=upload(image))
    assert answer.status_code == 200
    body = answer.json()
    assert body["decision"] == "match" and body["identity"] == "pet_002"
    first = body["matches"][0]
    assert first["identity"] == "pet_002" and first["photos"][0]["id"] == content_id(image) and first["score"] == pytest.approx(1.0, abs=1e-4)
    scores = [m["score"] for m in body["matches"]]
    assert scores == sorted(scores, reverse=True) and len({m["identity"] for m in body["matches"]}) == len(scores) == 5
    thumb = c.get(first["photos"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256


def test_several_photos_of_one_animal_are_one_query(client, pets_dir):
    import torch

    c, service = client
    a, b = photo(pets_dir, 4, 0), photo(pets_dir, 4, 1)
    body = c.post("/v1/identify", files=upload(a, b), data={"top_k": "2"}).json()
    assert body["photos"] == 2 and len(body["matches"]) == 2
    # the answer is the gallery scored against the normalised mean of the two photos' embeddings, by hand
    vectors = service.embedder(torch.stack([service.decode(p.read_bytes(), "x").tensor for p in (a, b)]))
    fused = vectors.mean(0) / np.linalg.norm(vectors.mean(0))
    gallery, rows = service.gallery._live()
    names = np.array([service.gallery.rows.identities[r] for r in rows])
    scores = gallery @ fused
    best = {name: scores[names == name].max() for name in set(names)}
    expected = sorted(best, key=best.get, reverse=True)[:2]
    assert [m["identity"] for m in body["matches"]] == expected
    assert [m["score"] for m in body["matches"]] == pytest.approx([best[n] for n in expected], abs=1e-4)


def test_below_the_threshold_the_answer_is_unknown(client, pets_dir):
    c, service = client
    service.threshold = 0.99999  # the photo is not enrolled, so no score reaches it
    body = c.post("/v1/identify", files=upload(photo(pets_dir, 1, 4))).json()
    assert body["decision"] == "unknown" and body["identity"] is None
    assert body["matches"] and not any(m["accepted"] for m in body["matches"])


def test_enrol_list_show_and_identify_a_new_pet(client, pets_dir):
    c, _ = client
    a, b = photo(pets_dir, 0, 3), photo(pets_dir, 0, 4)  # not enrolled yet
    response = c.post("/v1/identities/rex-4711/photos", files=upload(a, b))
    assert response.status_code == 201
    assert [p["created"] for p in response.json()["photos"]] == [True, True]
    again = c.post("/v1/identities/rex-4711/photos", files=upload(a)).json()
    assert again["photos"][0] == {"id": content_id(a), "created": False, "thumbnail": f"/v1/photos/{content_id(a)}/thumbnail"}
    shown = c.get("/v1/identities/rex-4711").json()
    assert [p["id"] for p in shown["photos"]] == [content_id(a), content_id(b)]
    listed = c.get("/v1/identities", params={"offset": 8, "limit": 5}).json()
    assert listed["total"] == 9 and listed["identities"] == [{"identity": "rex-4711", "photos": 2}]
    assert c.post("/v1/identify", files=upload(b)).json()["identity"] == "rex-4711"
    assert c.get("/v1/health").json()["gallery"]["photos"] == 26


def test_a_photo_enrolled_as_one_pet_cannot_be_enrolled_as_another(client, pets_dir):
    c, service = client
    taken, fresh = photo(pets_dir, 3, 0), photo(pets_dir, 3, 4)
    response = c.post("/v1/identities/other/photos", files=upload(fresh, taken))
    assert response.status_code == 409 and "already enrolled as pet_003" in response.json()["error"]
    assert c.get("/v1/identities/other").status_code == 404 and len(service.gallery) == 24  # nothing of the request was kept


def test_delete_a_photo_and_an_identity(client, pets_dir):
    c, service = client
    image = photo(pets_dir, 5, 0)
    pid = content_id(image)
    assert c.delete(f"/v1/photos/{pid}").json() == {"photo": pid, "identity": "pet_005"}
    assert c.get(f"/v1/photos/{pid}/thumbnail").status_code == 404
    assert c.delete(f"/v1/photos/{pid}").status_code == 404
    assert len(c.get("/v1/identities/pet_005").json()["photos"]) == 2
    assert not (service.gallery.folder / "thumbnails" / f"{pid}.jpg").exists()
    assert c.delete("/v1/identities/pet_005").json() == {"identity": "pet_005", "deleted_photos": 2}
    assert c.get("/v1/identities/pet_005").status_code == 404 and c.delete("/v1/identities/pet_005").status_code == 404
    body = c.post("/v1/identify", files=upload(photo(pets_dir, 5, 1)), data={"top_k": "7"}).json()
    assert "pet_005" not in {m["identity"] for m in body["matches"]} and len(body["matches"]) == 7


def test_write_endpoints_need_the_api_key_and_reads_do_not(tiny_model, gallery_dir, pets_dir):
    from fastapi.testclient import TestClient

    from petkit.serve.app import create_app
    from petkit.serve.service import Service

    key = "k" * 32
    service = Service.open(tiny_model, gallery_dir, threshold=0.9, device="cpu")
    try:
        with TestClient(create_app(service, key), raise_server_exceptions=False) as c:
            image = photo(pets_dir, 6, 4)
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "k" * 31}):
                refused = c.post("/v1/identities/kim/photos", files=upload(image), headers=headers)
                assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer" and "API key" in refused.json()["error"]
            assert c.delete("/v1/identities/pet_001").status_code == 401 and c.delete(f"/v1/photos/{'0' * 32}").status_code == 401
            assert len(service.gallery) == 24
            assert c.post("/v1/identities/kim/photos", files=upload(image), headers={"Authorization": f"Bearer {key}"}).status_code == 201
            assert c.delete("/v1/identities/kim", headers={"X-API-Key": key}).status_code == 200
            assert c.post("/v1/identify", files=upload(image)).status_code == 200 and c.get("/v1/identities").status_code == 200
    finally:
        service.close()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize("payload, status, words", [
    (b"", 422, "empty"),
    (b"\xff\xd8\xff\xe0 truncated jpeg", 422, "cannot decode"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 422, "cannot decode"),  # Pillow's EPS decoder would run Ghostscript
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 422, "cannot decode"),
    (_png_claiming(100_000, 100_000), 413, "is refused"),  # 10 Gpx claimed: refused from the header, nothing allocated
])
def test_bad_photos_get_a_json_4xx_and_change_nothing(client, payload, status, words):
    c, service = client
    for url in ("/v1/identify", "/v1/identities/newcomer/photos"):
        response = c.post(url, files=upload(payload))
        assert response.status_code == status and words in response.json()["error"] and "\n" not in response.json()["error"]
        assert "BytesIO" not in response.json()["error"]
    assert len(service.gallery) == 24 and c.get("/v1/identities/newcomer").status_code == 404


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding(client):
    c, service = client
    service.settings.max_pixels = 1_000_000
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 1000), (10, 20, 30)).save(buffer, "PNG")
    response = c.post("/v1/identify", files=upload(buffer.getvalue()))
    assert response.status_code == 413 and "1200x1000" in response.json()["error"]


def test_request_size_limits(tiny_model, gallery_dir, pets_dir):
    from fastapi.testclient import TestClient

    from petkit.serve.app import create_app
    from petkit.serve.service import Service, Settings

    service = Service.open(tiny_model, gallery_dir, threshold=0.9, device="cpu", settings=Settings(max_upload_bytes=100_000, max_photos=3))
    try:
        with TestClient(create_app(service), raise_server_exceptions=False) as c:
            big = upload(b"\xff\xd8" + bytes(200_000))
            response = c.post("/v1/identify", files=big)
            assert response.status_code == 413 and "upload limit" in response.json()["error"]

            def chunks():  # no Content-Length: the limit holds while the body streams in
                for _ in range(50):
                    yield bytes(10_000)

            streamed = c.post("/v1/identify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
            assert streamed.status_code == 413
            many = c.post("/v1/identify", files=upload(*[photo(pets_dir, 0, n) for n in range(4)]))
            assert many.status_code == 413 and "limit is 3" in many.json()["error"]
            assert c.post("/v1/identify", files=upload(photo(pets_dir, 0, 0))).status_code == 200
    finally:
        service.close()


@pytest.mark.parametrize("name", ["a b", "-lead", "x" * 129, "caf\u00e9", "a;rm -rf", "..."])
def test_identity_names_are_validated(client, pets_dir, name):
    c, service = client
    response = c.post(f"/v1/identities/{name}/photos", files=upload(photo(pets_dir, 7, 4)))
    assert response.status_code == 422 and "not a valid name" in response.json()["error"]
    assert c.get(f"/v1/identities/{name}").status_code == 422 and len(service.gallery) == 24


def test_malformed_requests_are_json_4xx(client):
    c, _ = client
    assert c.post("/v1/identify").status_code == 422
    assert c.post("/v1/identify", files=upload(b"x"), data={"top_k": "0"}).status_code == 422
    assert c.post("/v1/identify", files=upload(b"x"), data={"top_k": "many"}).status_code == 422
    assert c.get("/v1/identities", params={"limit": 5000}).status_code == 422
    assert c.delete("/v1/photos/not-a-hash").status_code == 422
    assert c.get("/v1/photos/../../etc/passwd/thumbnail").status_code == 404
    assert c.get("/v1/photos/nothex/thumbnail").status_code == 404
    assert c.get("/static/../app.py").status_code == 404 and c.get("/static/secret.txt").status_code == 404
    for response in (c.post("/v1/identify"), c.get("/nowhere"), c.put("/v1/health")):
        assert set(response.json()) >= {"error"} and response.status_code < 500


def test_page_docs_and_schema(client):
    c, _ = client
    page = c.get("/")
    assert page.status_code == 200 and 'id="identify-photos"' in page.text and "capture=" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"] and "http" not in page.text.split("<body>")[0].replace("https://", "")
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/docs").status_code == 200
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/identify", "/v1/identities/{identity}/photos", "/v1/identities", "/v1/identities/{identity}", "/v1/photos/{photo_id}",
            "/v1/photos/{photo_id}/thumbnail", "/v1/health"} <= set(paths)


def test_a_gallery_of_another_model_refuses_to_start(gallery_dir, tmp_path):
    import torch

    from petkit.config import resolve
    from petkit.models.checkpoint import save_checkpoint
    from petkit.models.model import build_model
    from petkit.serve.service import Service

    torch.manual_seed(1)
    config = resolve(None, ["model.backbone.args.model=resnet10t", "model.head.args.embedding_dim=16", "model.backbone.args.pretrained=false"])
    save_checkpoint(tmp_path / "other.pt", build_model(config.model, 32).eval())
    with pytest.raises(PetkitError, match="holds embeddings of model .*, not of this model"):
        Service.open(tmp_path / "other.pt", gallery_dir, threshold=0.5, device="cpu")


def test_micro_batching_puts_concurrent_requests_in_one_forward_pass():
    import asyncio

    import torch

    from petkit.serve.service import MicroBatcher

    sizes = []

    def embed(batch):
        sizes.append(len(batch))
        return batch.flatten(1).float().numpy()

    async def run():
        batcher = MicroBatcher(embed, max_batch=16, max_wait_ms=200)
        await batcher.start()
        try:
            requests = [[torch.full((1, 1, 1), i)] * (1 + i % 2) for i in range(8)]
            answers = await asyncio.gather(*(batcher(r) for r in requests))
        finally:
            await batcher.stop()
        return requests, answers

    requests, answers = asyncio.run(run())
    assert sizes == [12]  # 8 requests, 12 photos, one pass
    for request, answer in zip(requests, answers):
        assert answer.shape == (len(request), 1) and (answer == request[0].item()).all()
