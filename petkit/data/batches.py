"""Images as uint8 tensors, batch by batch.

With ``cache_images`` every image is decoded and resized once (threads: PIL releases the
GIL) and kept as one uint8 tensor, 37 KB per image at 112 px; a batch is then a single
index operation. Without it, DataLoader workers decode each batch. Either way a batch is
``uint8 [B, 3, S, S]``: augmentation and normalisation happen later, batched, on the
training device (petkit.data.augment).

Streaming decodes in threads up to ``THREAD_LIMIT`` workers and in processes beyond: part of
each decode holds the GIL, so threads stop scaling at about two (measured on a 16-core H100
host: 2,067 img/s with 2 threads, 1,714 with 8), while processes cost a start-up that a
2-core machine never earns back.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from petkit.data.images import load_tensor
from petkit.data.manifest import Manifest
from petkit.errors import PetkitError

THREAD_LIMIT = 2


class ManifestImages(Dataset):
    def __init__(self, manifest: Manifest, image_size: int):
        self.paths = [manifest.abspath(row) for row in manifest.rows]
        self.bboxes = manifest.bboxes()
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_tensor(self.paths[index], self.image_size, self.bboxes[index])


class ImageStore:
    """Where batches come from: an in-memory uint8 cache or decoding threads.

    ``skip_unreadable``: an image that fails to decode becomes a black placeholder in its batch and
    is recorded in ``failed`` (index -> reason) instead of ending the run, for callers that answer
    every readable image and report the rest (search).
    """

    def __init__(self, manifest: Manifest, image_size: int, cache: bool = True, num_workers: int = 2,
                 progress: Callable[[int], None] | None = None, skip_unreadable: bool = False):
        self.dataset = ManifestImages(manifest, image_size)
        self.num_workers = num_workers
        self.skip_unreadable = skip_unreadable
        self.failed: dict[int, str] = {}
        self.images: torch.Tensor | None = None
        if cache:
            self.images = decode_all(self.dataset, progress)

    def __len__(self) -> int:
        return len(self.dataset)

    def paths_of(self, indices: list[int], mask) -> list[str]:
        """The image paths of ``indices`` where ``mask`` is true (for error messages)."""
        return [str(self.dataset.paths[i]) for i, keep in zip(indices, mask) if keep]

    def batches(self, index_lists: Iterable[list[int]]) -> Iterator[tuple[list[int], torch.Tensor]]:
        index_lists = list(index_lists)
        if self.images is not None:
            for indices in index_lists:
                yield indices, self.images[indices]
            return
        if self.num_workers > THREAD_LIMIT:
            yield from self._decoded_in_processes(index_lists)
            return
        yield from self._decoded_ahead(index_lists)

    def _decoded_in_processes(self, index_lists: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor]]:
        loader = DataLoader(_Reported(self.dataset), batch_sampler=index_lists, num_workers=self.num_workers,
                            collate_fn=list, prefetch_factor=4)
        for indices, items in zip(index_lists, loader):
            yield indices, self._collect(indices, items)

    def _decoded_ahead(self, index_lists: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Decode upcoming batches in threads while the caller works on the current one."""
        ahead = max(1, self.num_workers)
        with ThreadPoolExecutor(max_workers=ahead) as pool:
            pending: deque = deque()
            for indices in index_lists:
                pending.append((indices, pool.submit(self._stack, indices)))
                if len(pending) > ahead:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()

    def _stack(self, indices: list[int]) -> torch.Tensor:
        return self._collect(indices, [_reported(self.dataset, i) for i in indices])

    def _collect(self, indices: list[int], items: list) -> torch.Tensor:
        """Stack decoded images; a decoding error ends the batch, or (skipping) leaves a placeholder and a record."""
        size = self.dataset.image_size
        for index, item in zip(indices, items):
            if isinstance(item, PetkitError):
                if not self.skip_unreadable:
                    raise item
                self.failed[index] = item.message
        return torch.stack([torch.zeros((3, size, size), dtype=torch.uint8) if isinstance(item, PetkitError) else item for item in items])


def _reported(dataset: ManifestImages, index: int):
    try:
        return dataset[index]
    except PetkitError as error:
        return error


class _Reported(Dataset):
    """Returns a decoding error instead of raising it, so it reaches the main process intact."""

    def __init__(self, dataset: ManifestImages):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return _reported(self.dataset, index)


def decode_all(dataset: ManifestImages, progress: Callable[[int], None] | None = None, workers: int = 4) -> torch.Tensor:
    size = dataset.image_size
    out = torch.empty((len(dataset), 3, size, size), dtype=torch.uint8)

    def decode(index: int) -> int:
        out[index] = dataset[index]
        return index

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(decode, range(len(dataset))):
            if progress:
                progress(1)
    return out


def sequential(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(start, min(start + batch_size, n))) for start in range(0, n, batch_size)]
