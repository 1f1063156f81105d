"""Worker of `bench/search.py`: one backend on one dataset, in a process of its own.

Run as `python bench/search_workers.py '<json spec>'`; the last stdout line is a JSON result.
A process per measurement keeps peak memory apart: `rss_ratio` is

    (peak resident memory of the process) - (resident memory just before the first vector is
    read) / (raw float32 bytes of the gallery, N x D x 4)

so it counts the index with everything its build and searches allocate, and not the interpreter
or the imported libraries. The peak is the kernel's high-water mark of this process's memory,
`VmHWM` of /proc/self/status, reset to the current size at the baseline (`clear_refs` 5), and
not `getrusage(RUSAGE_SELF).ru_maxrss`: on Linux `ru_maxrss` survives fork + exec, so a
worker would report the driver's resident size (which holds the gallery) as its own peak. The gallery is streamed from a `.npy` file with plain reads, in
chunks of `chunk_rows`, into `index.add`: vectors never exist twice in the process except for one
chunk, as when embeddings arrive from a model batch by batch. The exact backend's ground truth
(top-k ids of the recall queries) is written by its worker and read by the others.
"""

import json
import statistics
import sys
import time

import numpy as np

import lib

from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.metrics import recall_at


def resident_bytes(field="VmRSS"):
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of this process, in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak():
    """Sets the peak resident size to the current one (Linux >= 4.0), if allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # then the peak may include the imports, which only overstates rss_ratio


def read_chunks(path, rows):
    """Yields float32 [<= rows, D] chunks of a .npy file by plain reads (no memory map)."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, _, dtype = read_header(handle)
        for begin in range(0, shape[0], rows):
            count = min(rows, shape[0] - begin)
            yield np.fromfile(handle, dtype=dtype, count=count * shape[1]).reshape(count, shape[1])


class Ours:
    """A backend of `embedding_net.index`, as users build it: `build` (told the final count,
    `capacity`, so that it allocates once) then `add`."""

    def __init__(self, name, distance, labels):
        self.name, self.distance, self.index, self.capacity = name, distance, None, len(labels)
        self.names = [str(c) for c in range(int(labels.max()) + 1)]

    def add(self, vectors, labels):
        if self.index is None:
            self.index = EmbeddingIndex.build(vectors, labels, self.names, distance=self.distance,
                                              backend=self.name, capacity=self.capacity)
        else:
            self.index.add(vectors, labels)

    def search(self, queries, k):
        return self.index.search(queries, k)[1]


class FaissFlatIP:
    """Yardstick: faiss brute force, inner product (the same ranking as L2 on unit vectors)."""

    def __init__(self, name, distance, labels):
        import faiss

        self.faiss, self.index = faiss, None

    def add(self, vectors, labels):
        if self.index is None:
            self.index = self.faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def search(self, queries, k):
        return self.index.search(queries, k)[1]


class FaissHNSWFlat(FaissFlatIP):
    """Yardstick: bare faiss IndexHNSWFlat with the `hnsw` backend's settings (M 16, ef 32/64)."""

    def add(self, vectors, labels):
        if self.index is None:
            self.index = self.faiss.IndexHNSWFlat(vectors.shape[1], 16)
            self.index.hnsw.efConstruction = 32
            self.index.hnsw.efSearch = 64
        self.index.add(vectors)


YARDSTICKS = {"faiss_flat_ip": FaissFlatIP, "faiss_hnsw_flat": FaissHNSWFlat}


def measure(spec):
    data, k = spec["data"], spec["k"]
    labels = np.load(f"{data}/labels.npy")
    queries = np.load(f"{data}/queries.npy")
    batch = np.load(f"{data}/batch.npy")
    adapter = YARDSTICKS.get(spec["backend"], Ours)(spec["backend"], spec["distance"], labels)
    reset_peak()
    baseline = resident_bytes()
    started, seen = time.perf_counter(), 0
    for chunk in read_chunks(f"{data}/gallery.npy", spec["chunk_rows"]):
        adapter.add(chunk, labels[seen : seen + len(chunk)])
        seen += len(chunk)
        del chunk
    build = time.perf_counter() - started
    adapter.search(queries[:1], k)  # warm-up
    single = []
    for query in queries:
        began = time.perf_counter()
        adapter.search(query[None, :], k)
        single.append(time.perf_counter() - began)
    ids = adapter.search(queries, k)
    if spec.get("write_truth"):
        np.save(spec["write_truth"], ids)
    truth = np.load(spec["truth"]) if spec.get("truth") else ids
    batched = []
    for _ in range(3):
        began = time.perf_counter()
        adapter.search(batch, k)
        batched.append(time.perf_counter() - began)
    peak = resident_bytes("VmHWM")
    raw = seen * queries.shape[1] * 4
    return dict({"size": seen, "backend": spec["backend"],
                 "yardstick": spec["backend"] in YARDSTICKS, "dataset": spec["dataset"],
                 "build_s": round(build, 3), "rss_ratio": round((peak - baseline) / raw, 3),
                 "p50_ms": round(1000 * statistics.median(single), 4),
                 "p99_ms": round(1000 * float(np.percentile(single, 99)), 4),
                 "batched_ms_per_query": round(1000 * statistics.median(batched) / len(batch), 4),
                 "single_queries": len(single), "batch_queries": len(batch)},
                **recall_at(ids, truth, ks=(1, 10)))


if __name__ == "__main__":
    lib.worker_reply(measure(json.loads(sys.argv[1])))
