"""Gallery index kinds side by side: build time, query latency and recall@10 against exact search.

A synthetic gallery of clustered, L2-normalised embeddings (individuals x photos each, 128-d, the
default embedding size) stands in for a large enrolment; queries are fresh photos of enrolled
individuals. Every kind is timed in the same run, flat (exact) being the baseline. Usage:

    python benchmarks/bench_index.py --identities 20000 --photos 5
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from petkit.retrieval.index import GalleryIndex


def clustered(identities: int, photos: int, dim: int, spread: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(identities, dim)).astype(np.float32)
    labels = np.repeat(np.arange(identities), photos)
    x = centres[labels] + spread * rng.normal(size=(len(labels), dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=20000)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--spread", type=float, default=0.8, help="photo noise around an individual's centre")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    gallery, labels = clustered(args.identities, args.photos + 1, args.dim, args.spread, rng)
    is_query = np.zeros(len(labels), dtype=bool)
    is_query[:: args.photos + 1] = True  # one photo per individual is a query
    picked = rng.choice(np.nonzero(is_query)[0], min(args.queries, int(is_query.sum())), replace=False)
    queries, query_labels = gallery[picked], labels[picked]
    gallery, labels = gallery[~is_query], labels[~is_query]
    print(f"gallery {len(gallery):,} images of {args.identities:,} identities, {args.dim}-d; {len(queries):,} queries; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print("\n| kind | params | build s | batch: queries/s | one query: ms | recall@10 vs exact | top-1 identity correct |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in ("flat", "ivf", "hnsw"):
        started = time.perf_counter()
        index = GalleryIndex(gallery, labels.astype(str), kind)
        build = time.perf_counter() - started
        index.search(queries[:10], 10)  # warm-up
        started = time.perf_counter()
        _, found = index.search(queries, 10)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        for query in queries[:200]:  # one photo at a time, as 'petkit search' on a found pet
            index.search(query[None], 10)
        single_ms = (time.perf_counter() - started) / 200 * 1000
        recall = index.recall_against_exact(queries, 10)
        top1 = np.mean(labels[found[:, 0]] == query_labels)
        print(f"| {kind} | {index.params or '-'} | {build:.2f} | {len(queries) / seconds:,.0f} | {single_ms:.2f} | {recall:.4f} | {top1:.4f} |")


if __name__ == "__main__":
    main()
