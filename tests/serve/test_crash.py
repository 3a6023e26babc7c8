"""kill -9 in the middle of a burst of concurrent enrolments: every acknowledged one is there after a restart."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
from PIL import Image

from tests.serve.server import Server


def multipart(photos: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for n, data in enumerate(photos):
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photos\"; filename=\"p{n}.png\"\r\n"
                 f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def noise_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def post(url: str, photos: list[bytes]) -> int | None:
    body, kind = multipart(photos)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": kind}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None  # the server died first: no answer, either outcome is allowed


def test_acknowledged_enrolments_survive_kill_9_and_refused_ones_are_absent(tiny_model, gallery_dir, tmp_path):
    log = tmp_path / "serve.log"
    server = Server(tiny_model, gallery_dir, "--threshold", "0.9", log=log)
    outcomes: dict[str, int | None] = {}
    lock = threading.Lock()
    counter = iter(range(10**6))
    stop = threading.Event()

    def client():
        while not stop.is_set():
            with lock:
                n = next(counter)
            name = f"burst-{n}"
            photos = [noise_png(2 * n), noise_png(2 * n + 1)] if n % 5 else [b"\xff\xd8 not a photo"]  # every 5th is refused (422)
            status = post(f"{server.url}/v1/identities/{name}/photos", photos)
            with lock:
                outcomes[name] = status

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with lock:
                if sum(1 for s in outcomes.values() if s == 201) >= 40:
                    break
            time.sleep(0.01)
        server.kill()  # SIGKILL with requests in flight
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    acknowledged = {name for name, status in outcomes.items() if status == 201}
    refused = {name for name, status in outcomes.items() if status is not None and status != 201}
    assert len(acknowledged) >= 40, (outcomes, log.read_text()[-3000:])
    assert refused and all(outcomes[n] == 422 for n in refused)

    again = Server(tiny_model, gallery_dir, "--threshold", "0.9", log=log)
    try:
        listing = json.loads(urllib.request.urlopen(f"{again.url}/v1/identities?limit=1000").read())
        present = {entry["identity"]: entry["photos"] for entry in listing["identities"]}
        assert acknowledged <= set(present), sorted(acknowledged - set(present))
        assert not refused & set(present)
        assert all(present[name] == 2 for name in present if name.startswith("burst-"))  # a request is all or nothing
        assert listing["total"] == 8 + sum(1 for name in present if name.startswith("burst-"))
    finally:
        assert again.stop() == 0
    assert "Traceback" not in log.read_text()
    assert (gallery_dir / "journal.log").read_bytes() == b""  # a clean stop folds the journal into the snapshot
