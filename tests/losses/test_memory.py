"""Cross-batch memory: each pair-based loss against its NumPy loop with the memory as extra
references, the queue's order, the warm-up, training through `MemoryModel`, and its variables
in the saved weights (what a resumed run restores)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.losses import CrossBatchMemory, MemoryModel, get_loss, losses_with_memory
from tests.losses import references

REFERENCES = {  # registry name -> (settings, NumPy loop)
    "triplet": ({"mining": "all", "margin": 0.2}, lambda l, e, m: references.triplet_all(l, e, 0.2, memory=m)),
    "contrastive": ({}, lambda l, e, m: references.batch_contrastive(l, e, memory=m)),
    "multi_similarity": ({}, lambda l, e, m: references.multi_similarity(l, e, memory=m)),
    "supcon": ({}, lambda l, e, m: references.supcon(l, e, memory=m)),
    "circle": ({}, lambda l, e, m: references.circle(l, e, memory=m)),
}


def test_every_loss_that_takes_memory_has_a_reference():
    assert set(losses_with_memory()) == set(REFERENCES)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_memory_references_match_the_loops(name, seed):
    rng = np.random.default_rng(seed)
    labels, memory_labels = rng.integers(0, 4, 8), rng.integers(0, 6, 12)  # classes 4, 5: memory only
    embeddings, memory_embeddings = 0.5 * rng.normal(size=(8, 5)), 0.5 * rng.normal(size=(12, 5))
    settings, loop = REFERENCES[name]
    loss = get_loss(name)(**settings)
    value = loss.references_loss(labels, embeddings.astype("float32"), memory_labels,
                                 memory_embeddings.astype("float32"))
    expected = loop(labels, embeddings, (memory_labels, memory_embeddings))
    assert float(value) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert expected != pytest.approx(loop(labels, embeddings, None), rel=1e-3)  # the memory mattered


@pytest.mark.parametrize("mining", ["semi_hard", "hard", "all"])
@pytest.mark.parametrize("soft_margin", [False, True])
def test_triplet_memory_rows_are_references_only(mining, soft_margin):
    # The loop of tests/losses/test_triplet.py with the memory's rows weighing 0 as anchors.
    from tests.losses.test_triplet import weighted_reference

    rng = np.random.default_rng(4)
    labels, memory_labels = rng.integers(0, 4, 8), rng.integers(0, 6, 12)
    embeddings, memory_embeddings = rng.normal(size=(8, 5)), rng.normal(size=(12, 5))
    loss = get_loss("triplet")(mining=mining, margin=0.3, soft_margin=soft_margin)
    value = loss.references_loss(labels, embeddings.astype("float32"), memory_labels, memory_embeddings.astype("float32"))
    expected = weighted_reference(np.concatenate([labels, memory_labels]), np.concatenate([embeddings, memory_embeddings]),
                                  0.3, mining, "euclidean", soft_margin, np.r_[np.ones(8), np.zeros(12)])
    assert float(value) == pytest.approx(expected, rel=1e-4)


def test_no_gradient_flows_into_the_memory():
    memory_embeddings = tf.Variable(np.random.default_rng(0).normal(size=(6, 4)).astype("float32"))
    embeddings = tf.Variable(np.random.default_rng(1).normal(size=(4, 4)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        value = get_loss("multi_similarity")().references_loss(np.array([0, 0, 1, 1]), embeddings,
                                                                np.array([0, 1, 2, 0, 1, 2]), memory_embeddings)
    assert tape.gradient(value, memory_embeddings) is None
    assert np.abs(tape.gradient(value, embeddings).numpy()).max() > 0


def test_the_queue_overwrites_the_oldest_and_waits_for_its_warm_up():
    memory = CrossBatchMemory(5, warmup_steps=3)
    memory.build((None, 2))
    for step in range(3):
        assert not bool(memory.ready())
        memory.enqueue(np.array([step, step]), np.full((2, 2), step, "float32"))
    # 6 enqueued into 5 slots: the first written slot now holds step 2's second embedding.
    assert list(memory.labels.numpy()) == [2, 0, 1, 1, 2] and int(memory.enqueued.numpy()) == 6
    assert bool(memory.ready())
    # A batch larger than the memory keeps its last 5 rows where writing the 7 one by one from
    # the oldest slot (1) leaves them: 10 -> 1, 11 -> 2, 12 -> 3, 13 -> 4, 14 -> 0, 15 -> 1, 16 -> 2.
    memory.enqueue(np.arange(10, 17), np.arange(14, dtype="float32").reshape(7, 2))
    assert list(memory.labels.numpy()) == [14, 15, 16, 12, 13] and int(memory.enqueued.numpy()) == 13


def small_model(memory_size, warmup_steps=0, name="triplet"):
    tower = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.UnitNormalization()],
                             name="tower")
    loss = get_loss(name)()
    model = MemoryModel(tower, CrossBatchMemory(memory_size, warmup_steps), loss)
    model.compile(optimizer="sgd", loss=loss)
    return model


def test_training_fills_the_memory_and_uses_it_after_the_warm_up(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(8, 6)).astype("float32"), np.repeat(np.arange(4), 2)
    model = small_model(16, warmup_steps=2)
    losses = [float(model.train_on_batch(images, labels + 10 * step)) for step in range(3)]
    memory = model.memory
    assert int(memory.enqueued.numpy()) == 24 and int(memory.steps.numpy()) == 3
    # The third batch (labels + 20) over the first; the second's stays in slots 8 to 15.
    assert list(memory.labels.numpy()) == list(labels + 20) + list(labels + 10)
    assert np.allclose(memory.embeddings.numpy()[:8], model.tower(images).numpy(), atol=0.5)
    # Steps 1 and 2 are plain in-batch losses; step 3 adds 16 references.
    plain = small_model(16, warmup_steps=100)
    plain.set_weights(model.get_weights())
    with_memory = float(model.train_on_batch(images, labels))
    without = float(plain.train_on_batch(images, labels))
    assert np.isfinite(losses).all() and with_memory != pytest.approx(without, rel=1e-4)
    # Validation is the tower's alone, and leaves the memory as it was.
    model.evaluate(images, labels, verbose=0)
    assert int(memory.enqueued.numpy()) == 32
    # The memory is part of the weights a checkpoint or BackupAndRestore saves.
    path = str(tmp_path / "memory.weights.h5")
    model.save_weights(path)
    restored = small_model(16, warmup_steps=2)
    restored(images)  # builds it, as fit does before BackupAndRestore restores
    restored.load_weights(path)
    assert np.array_equal(restored.memory.embeddings.numpy(), memory.embeddings.numpy())
    assert int(restored.memory.enqueued.numpy()) == 32


def test_memory_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="`size` must be an integer >= 1. Received: 0"):
        CrossBatchMemory(0)
    with pytest.raises(ValueError, match="ProxyAnchorLoss cannot take a cross-batch memory"):
        MemoryModel(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), CrossBatchMemory(4),
                    get_loss("proxy_anchor")())
