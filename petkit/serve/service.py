"""The lost-pet finder behind ``petkit serve``: one embedder, one gallery, one threshold.

Uploaded photos are decoded by the same reader as every dataset image (formats restricted to
image decoders, EXIF orientation, the decompression-bomb rule at a stricter pixel limit), then
embedded by the one embedder (:func:`petkit.engine.embedder.open_embedder`). Concurrent requests
meet in :class:`MicroBatcher`: the first request of a batch waits at most ``max_wait_ms`` for
others, up to ``max_batch`` photos, and all of them go through one forward pass.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from petkit import __version__
from petkit.data.images import TooLarge, open_rgb, to_tensor
from petkit.errors import PetkitError
from petkit.limits import SIMILARITY, Range
from petkit.retrieval.calibration import default_path, load_calibration, resolve_threshold
from petkit.serve.gallery import THUMBNAIL_SIDE, Candidate, Gallery, photo_id, thumbnail_jpeg

DEFAULT_MAX_PIXELS = 50_000_000  # a 50 Mpx phone photo decodes; a decompression bomb does not
MAX_BATCH = Range(1, 4096)
MAX_WAIT_MS = Range(0, 10_000)


class UploadRefused(PetkitError):
    """A photo that cannot be accepted: ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, hint: str | None = None, status: int = 422):
        super().__init__(message, hint)
        self.status = status

    def __reduce__(self):
        return UploadRefused, (self.message, self.hint, self.status)


@dataclass
class Photo:
    id: str
    tensor: torch.Tensor  # uint8 [3, S, S]
    thumbnail: bytes  # JPEG


@dataclass
class Settings:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_upload_bytes: int = 25 * 1024 * 1024
    max_photos: int = 16  # per request
    decode_threads: int = 4


class MicroBatcher:
    """Collects the photos of concurrent requests into one forward pass of ``embed`` (run in one worker thread)."""

    def __init__(self, embed, max_batch: int, max_wait_ms: float):
        self.embed, self.max_batch, self.max_wait = embed, MAX_BATCH.check(max_batch, "--max-batch"), MAX_WAIT_MS.check(max_wait_ms, "--max-wait-ms") / 1000
        self.queue: asyncio.Queue | None = None
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="petkit-embed")
        self.task: asyncio.Task | None = None
        self.batches = 0
        self.largest = 0

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.worker.shutdown(wait=True)

    async def __call__(self, tensors: list[torch.Tensor]) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((tensors, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            pending, count = [first], len(first[0])
            deadline = loop.time() + self.max_wait
            while count < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    item = self.queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self.queue.get(), timeout)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                pending.append(item)
                count += len(item[0])
            batch = torch.stack([t for tensors, _ in pending for t in tensors])
            try:
                vectors = await loop.run_in_executor(self.worker, self.embed, batch)
            except Exception as exc:  # every waiting request gets the error, the loop goes on
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.largest = max(self.largest, len(batch))
            start = 0
            for tensors, future in pending:
                if not future.done():
                    future.set_result(vectors[start:start + len(tensors)])
                start += len(tensors)


class Service:
    def __init__(self, embedder, gallery: Gallery, threshold: float, threshold_source: str, far: float | None, settings: Settings):
        self.embedder, self.gallery, self.settings = embedder, gallery, settings
        self.threshold, self.threshold_source, self.far = threshold, threshold_source, far
        self.batcher = MicroBatcher(self._embed, settings.max_batch, settings.max_wait_ms)
        self._decode_slots = threading.BoundedSemaphore(settings.decode_threads)  # decoded photos in memory at once
        self.started = time.time()

    @classmethod
    def open(cls, model: str | Path, gallery_folder: str | Path, calibration: str | Path | None = None, threshold: float | None = None,
             device: str = "auto", index_kind: str = "auto", settings: Settings | None = None) -> Service:
        """The model, the gallery made with it (refused if another model's) and the threshold, or one clear error."""
        from petkit.engine.embedder import open_embedder

        if threshold is not None:
            SIMILARITY.check(threshold, "--threshold")
        embedder = open_embedder(model, device)
        threshold, source, far = _threshold(threshold, calibration, embedder.fingerprint, str(model), None)
        gallery = Gallery.open(gallery_folder, embedder.fingerprint, index_kind)
        try:
            if threshold is None:
                threshold, source, far = _threshold(None, None, embedder.fingerprint, str(model), gallery.calibration)
            if threshold is None:
                raise PetkitError("no threshold to decide 'not registered' by",
                                  "pass --calibration calibration.json (from 'petkit calibrate') or --threshold 0.6")
            return cls(embedder, gallery, threshold, source, far, settings or Settings())
        except BaseException:
            gallery.close()
            raise

    def close(self) -> None:
        self.gallery.close()

    # ---- photos in

    def decode(self, data: bytes, name: str) -> Photo:
        """An uploaded photo decoded, checked and resized (raises UploadRefused)."""
        if not data:
            raise UploadRefused(f"{name} is empty", "send the photo's bytes as a multipart file field")
        with self._decode_slots:
            try:
                image = open_rgb(io.BytesIO(data), min_size=max(self.embedder.image_size, THUMBNAIL_SIDE), max_pixels=self.settings.max_pixels, name=name)
            except PetkitError as exc:
                status = 413 if isinstance(exc, TooLarge) else 422
                raise UploadRefused(exc.message, "send a JPEG, PNG, WebP, HEIC or AVIF photo" if status == 422 else "send a smaller photo",
                                    status) from None
            tensor = to_tensor(image, self.embedder.image_size)
            thumbnail = thumbnail_jpeg(image)
        return Photo(photo_id(data), tensor, thumbnail)

    def _embed(self, batch: torch.Tensor) -> np.ndarray:
        vectors = self.embedder(batch)
        if not np.isfinite(vectors).all():
            raise PetkitError("the model gave NaN or infinite embeddings", "check the model file")
        return vectors

    # ---- answers

    async def identify(self, photos: list[Photo], top_k: int) -> dict:
        vectors = await self.batcher([p.tensor for p in photos])
        query = vectors.mean(axis=0, keepdims=True)  # several photos of one animal: one query
        query /= max(float(np.linalg.norm(query)), 1e-12)
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = (await loop.run_in_executor(None, self.gallery.search, query, top_k))[0]
        best = candidates[0] if candidates else None
        accepted = best is not None and best.score >= self.threshold
        return {
            "decision": "match" if accepted else "unknown",
            "identity": best.identity if accepted else None,
            "threshold": self.threshold,
            "photos": len(photos),
            "matches": [{"identity": c.identity, "score": round(c.score, 6), "accepted": c.score >= self.threshold,
                         "photos": [{"id": p, "score": round(s, 6), "thumbnail": f"/v1/photos/{p}/thumbnail"} for p, s in c.photos]}
                        for c in candidates],
        }

    async def enrol(self, identity: str, photos: list[Photo]) -> list[dict]:
        vectors = await self.batcher([p.tensor for p in photos])
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(None, self.gallery.enrol, identity, vectors, [p.id for p in photos], [p.thumbnail for p in photos])
        return [{"id": e.photo, "created": e.created, "thumbnail": f"/v1/photos/{e.photo}/thumbnail"} for e in done]

    def health(self) -> dict:
        card = self.embedder.card
        return {
            "status": "ok", "version": __version__,
            "model": {"fingerprint": card.fingerprint, "embedding_dim": card.embedding_dim, "image_size": card.image_size,
                      "runtime": self.embedder.describe()},
            "gallery": {"photos": len(self.gallery), "identities": self.gallery.n_identities, "index": self.gallery.kind},
            "threshold": {"value": self.threshold, "source": self.threshold_source, "far": self.far},
            "batching": {"max_batch": self.batcher.max_batch, "max_wait_ms": self.batcher.max_wait * 1000,
                         "batches": self.batcher.batches, "largest_batch": self.batcher.largest},
            "uptime_s": round(time.time() - self.started, 1),
        }


def _threshold(threshold, calibration, fingerprint: str, model: str, stored: dict | None) -> tuple[float | None, str, float | None]:
    """(threshold, where it came from, its target FAR): --threshold, --calibration, calibration.json beside the model, the gallery's."""
    if threshold is None and calibration is None and stored:
        return float(stored["threshold"]), f"the gallery ({stored.get('source', '')})", stored.get("far")
    if threshold is not None:
        return float(threshold), "--threshold", None
    path = Path(calibration) if calibration else default_path(model)
    if calibration is None and not path.is_file():
        return None, "", None
    value, source = resolve_threshold(None, path, fingerprint, model)
    return value, source, load_calibration(path)["target_far"]
