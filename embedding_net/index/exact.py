"""The `exact` backend: brute force with NumPy's BLAS, in bounded memory. The reference.

Every other backend is tested against this one, so it must be right first and fast second:

* Scores are one matrix product per block: q.x - |x|^2 / 2 (Euclidean; its maximum is the
  nearest, and |q|^2 - 2 * score is the squared distance) or q.x of unit vectors (cosine). Half
  the squared norms are stored beside the vectors, 4 bytes a vector, so the product is the only
  pass over the gallery.
* Memory does not grow with queries x gallery: at most `query_rows` queries are scored against
  at most `block_elements / query_rows` gallery rows at a time (16 MB of float32 by default,
  plus 32 MB of int64 positions for the first block's partial sort),
  and a running top-k is kept. The first block is reduced with `np.argpartition`; later blocks
  only with a comparison against each row's current k-th best score, which lets through a few
  candidates, merged by a small sort. That keeps the cost close to the matrix products alone.
* Vectors live in a list of segments (the memory-mapped array of a loaded file, then what was
  added): adding never copies what is stored, and a file's vectors are never read into memory.
  Small trailing segments are merged so that the list stays short.
* Removing really deletes (`deletes = True`): the ids after a removed vector shift down.

Ties in score are not ordered by id inside a block; the final k are sorted by (distance, id).
"""

import numpy as np

from embedding_net.index.distances import metric_of
from embedding_net.index.registry import Backend, register_backend


@register_backend("exact")
class ExactBackend(Backend):
    approximate = False
    deletes = True
    keeps_vectors = True  # stores the very array it is given: EmbeddingIndex passes a copy

    def __init__(self, dimension, distance, block_elements=1 << 22, query_rows=256,
                 merge_rows=65536):
        super().__init__(dimension, distance)
        self.block_elements, self.query_rows = int(block_elements), int(query_rows)
        self.merge_rows = int(merge_rows)
        self._l2 = metric_of(distance) == "l2"
        self._segments, self._half_norms = [], []
        self._spare = self._spare_half = None  # reserved rows (`reserve`), filled from the front
        self._used = 0

    @property
    def options(self):
        return {"block_elements": self.block_elements, "query_rows": self.query_rows,
                "merge_rows": self.merge_rows}

    @property
    def size(self):
        return sum(len(segment) for segment in self._segments)

    def _append(self, vectors, half_norms):
        if self._segments and len(self._segments[-1]) < self.merge_rows:
            vectors = np.concatenate([self._segments.pop(), vectors])
            half_norms = np.concatenate([self._half_norms.pop(), half_norms])
        self._segments.append(vectors)
        self._half_norms.append(half_norms)

    def reserve(self, count):
        extra = int(count) - self.size
        if extra > 0:  # np.empty: pages become resident only as rows are written
            self._spare = np.empty((extra, self.dimension), np.float32)
            self._spare_half, self._used = np.empty(extra, np.float32), 0

    def add(self, vectors):
        if not len(vectors):
            return
        half = (0.5 * np.einsum("ij,ij->i", vectors, vectors) if self._l2
                else np.zeros(len(vectors), np.float32))
        if self._spare is None or self._used + len(vectors) > len(self._spare):
            self._spare = self._spare_half = None  # no reservation, or outgrown: append
            self._append(vectors, half)
            return
        begin, end = self._used, self._used + len(vectors)
        self._spare[begin:end], self._spare_half[begin:end] = vectors, half
        if begin:  # the last segment is the filled front of the reservation: extend it
            self._segments.pop()
            self._half_norms.pop()
        self._segments.append(self._spare[:end])
        self._half_norms.append(self._spare_half[:end])
        self._used = end

    def _blocks(self, rows):
        start = 0
        for segment, half in zip(self._segments, self._half_norms):
            for begin in range(0, len(segment), rows):
                yield start + begin, segment[begin : begin + rows], half[begin : begin + rows]
            start += len(segment)

    def search(self, queries, k):
        distances = np.full((len(queries), k), np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        available = min(k, self.size)
        for begin in range(0, len(queries) if available else 0, self.query_rows):
            chunk = queries[begin : begin + self.query_rows]
            scores, found = self._top(chunk, available)
            if self._l2:
                squared = np.maximum(np.einsum("ij,ij->i", chunk, chunk)[:, None] - 2 * scores, 0)
                near = np.sqrt(squared) if self.distance == "euclidean" else squared
            else:
                near = np.maximum(1.0 - scores, 0.0)
            order = np.lexsort((found, near), axis=1)
            distances[begin : begin + len(chunk), :available] = np.take_along_axis(near, order, 1)
            ids[begin : begin + len(chunk), :available] = np.take_along_axis(found, order, 1)
        return distances, ids

    def _top(self, queries, k):
        """The k best (largest) scores per query and their ids, unordered."""
        rows = np.arange(len(queries))
        best = np.full((len(queries), k), -np.inf, np.float32)
        best_ids = np.full((len(queries), k), -1, np.int64)
        seen = 0
        for start, block, half in self._blocks(max(k, self.block_elements // len(queries))):
            scores = queries @ block.T
            if self._l2:
                scores -= half
            if seen < k:  # the running top-k is not full yet: a dense partial sort
                best, best_ids = _dense_merge(best, best_ids, scores, start, k)
            else:
                # flatnonzero: about ten times faster than a 2-D nonzero on a mostly-False mask
                hits = np.flatnonzero(scores > best.min(axis=1)[:, None])
                hit_rows, hit_cols = np.divmod(hits, scores.shape[1])
                if len(hit_rows) > best.size:
                    best, best_ids = _dense_merge(best, best_ids, scores, start, k)
                elif len(hit_rows):
                    best, best_ids = _sparse_merge(best, best_ids, rows, hit_rows,
                                                   scores[hit_rows, hit_cols], hit_cols + start)
            seen += len(block)
        return best, best_ids

    def vectors(self, ids):
        ids = np.asarray(ids, np.int64)
        starts = np.cumsum([0] + [len(s) for s in self._segments])
        which = np.searchsorted(starts, ids, side="right") - 1
        out = np.empty((len(ids), self.dimension), np.float32)
        for s in np.unique(which):
            mask = which == s
            out[mask] = self._segments[s][ids[mask] - starts[s]]
        return out

    def delete(self, keep):
        segments, halves, start = self._segments, self._half_norms, 0
        self._spare = self._spare_half = None
        self._segments, self._half_norms = [], []
        for segment, half in zip(segments, halves):
            mask = keep[start : start + len(segment)]
            start += len(segment)
            if mask.all():
                self._append(segment, half)
            elif mask.any():
                self._append(segment[mask], half[mask])

    def blobs(self):
        return {"vectors": list(self._segments), "half_norms": list(self._half_norms)}

    @classmethod
    def from_blobs(cls, dimension, distance, options, blobs, mmap):
        backend = cls(dimension, distance, **options)
        vectors = blobs.array("vectors", mmap=mmap)
        if len(vectors):
            backend._segments = [vectors]
            backend._half_norms = [blobs.array("half_norms", mmap=False)]
        return backend


def _dense_merge(best, best_ids, scores, start, k):
    """The k best of the running (best, best_ids) and a whole block of scores."""
    take = min(k, scores.shape[1])
    part = np.argpartition(scores, scores.shape[1] - take, axis=1)[:, scores.shape[1] - take :]
    merged = np.concatenate([best, np.take_along_axis(scores, part, 1)], axis=1)
    merged_ids = np.concatenate([best_ids, part + start], axis=1)
    keep = np.argpartition(merged, merged.shape[1] - k, axis=1)[:, merged.shape[1] - k :]
    return np.take_along_axis(merged, keep, 1), np.take_along_axis(merged_ids, keep, 1)


def _sparse_merge(best, best_ids, rows, hit_rows, hit_scores, hit_ids):
    """The k best per row of the running top-k and a few (row, score, id) candidates."""
    k = best.shape[1]
    all_rows = np.concatenate([np.repeat(rows, k), hit_rows])
    all_scores = np.concatenate([best.ravel(), hit_scores])
    all_ids = np.concatenate([best_ids.ravel(), hit_ids])
    order = np.lexsort((all_ids, -all_scores, all_rows))
    all_rows = all_rows[order]
    rank = np.arange(len(order)) - np.searchsorted(all_rows, all_rows)
    keep = order[rank < k]  # every row has >= k entries: the k of the running top-k
    return all_scores[keep].reshape(best.shape), all_ids[keep].reshape(best.shape)
