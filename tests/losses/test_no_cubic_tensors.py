"""Every loss and its gradient stay O(B^2) in memory: no tensor of the traced graph whose shape is
known at tracing holds B x B x B (or B x B x D) values. Shapes that depend on the data (the
[B, M, B] comparisons, M = positives per anchor, which large batches avoid) are not seen here:
`bench/loss_memory.py` measures the whole peak at B = 8,192."""

import numpy as np
import pytest
import tensorflow as tf

from embedding_net.losses import batch_loss, list_losses
from embedding_net.mining.registry import list_minings

B, D, C = 64, 16, 10  # D < B and C < B, so that a B x B x D or B x B x C tensor would show


def cases():
    for name in list_losses("embedding"):
        if name == "triplet":
            for mining in list_minings("batch"):
                yield pytest.param(name, {"mining": mining}, id=f"triplet-{mining}")
        else:
            yield pytest.param(name, {}, id=name)
    yield pytest.param("multi_similarity", {"mining_epsilon": 0.1}, id="multi_similarity-mined")


@pytest.mark.parametrize("name, settings", list(cases()))
def test_no_traced_tensor_is_larger_than_a_few_b_by_b(name, settings):
    value_of, _ = batch_loss(name, num_classes=C, **settings)

    @tf.function
    def loss_and_gradient(labels, embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            value = value_of(labels, embeddings)
        return value, tape.gradient(value, embeddings)

    labels = tf.constant(np.repeat(np.arange(B // 4) % C, 4).astype("int32"))
    embeddings = tf.constant(np.random.default_rng(0).normal(size=(B, D)).astype("float32"))
    value, gradient = loss_and_gradient(labels, embeddings)
    assert np.isfinite(float(value)) and np.isfinite(gradient.numpy()).all()
    graph = loss_and_gradient.get_concrete_function(labels, embeddings).graph
    largest = max((int(np.prod(output.shape.as_list())), op.type, op.name) for op in graph.get_operations()
                  for output in op.outputs if output.shape.rank is not None and None not in output.shape.as_list())
    assert largest[0] <= 2 * B * B, f"{largest[1]} {largest[2]} holds {largest[0]} values (B = {B})"
