"""Shared data for the index tests: clustered unit vectors, where nearest neighbours mean something."""

import numpy as np
import pytest


def clustered(n=3000, dimension=32, classes=100, noise=0.35, seed=0):
    """(float32 unit vectors [n, dimension], int64 labels [n]): class centres plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dimension))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % classes
    vectors = centres[labels] + rng.standard_normal((n, dimension)) * noise / np.sqrt(dimension)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), labels.astype(np.int64)


def perturbed(vectors, count=200, scale=0.1, seed=1):
    """Queries near (not equal to) gallery vectors."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    queries = picked + rng.standard_normal(picked.shape) * scale / np.sqrt(vectors.shape[1])
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def brute_force(queries, gallery, distance):
    """float64 [Q, N] distances by the definitions of `evaluation.nearest.distance_matrix`."""
    q, g = np.asarray(queries, np.float64), np.asarray(gallery, np.float64)
    if distance == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-6)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)
        return np.maximum(1 - q @ g.T, 0)
    squared = ((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    return squared if distance == "squared_euclidean" else np.sqrt(squared)


@pytest.fixture(scope="session")
def gallery():
    vectors, labels = clustered()
    return vectors, labels, [f"class_{c:03d}" for c in range(labels.max() + 1)]
