"""The fused Adam / AdamW update against Keras' own, step for step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.optim import build_optimizer
from embedding_net.optim.fused_adam import Adam, AdamW

PAIRS = [(lambda: Adam(0.01), lambda: keras.optimizers.Adam(0.01)),
         (lambda: AdamW(0.01, weight_decay=0.1), lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1)),
         (lambda: Adam(0.01, amsgrad=True), lambda: keras.optimizers.Adam(0.01, amsgrad=True))]


def _train(optimizer, steps=6, graph=True):
    rng = np.random.default_rng(0)
    weights = [keras.Variable(rng.normal(size=(5, 3)).astype("float32")),
               keras.Variable(rng.normal(size=(7,)).astype("float32"))]
    gradients = [[tf.constant(rng.normal(size=w.shape).astype("float32")) for w in weights] for _ in range(steps)]
    optimizer.build(weights)
    apply = lambda step_gradients: optimizer.apply(step_gradients, weights)  # noqa: E731
    apply = tf.function(apply) if graph else apply
    for step_gradients in gradients:
        apply(step_gradients)
    return [w.numpy() for w in weights] + [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
@pytest.mark.parametrize("ours,reference", PAIRS, ids=["adam", "adamw", "amsgrad"])
def test_same_weights_and_state_as_keras(ours, reference, graph):
    mine, theirs = _train(ours(), graph=graph), _train(reference(), graph=graph)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_kernel_is_the_one_that_runs(monkeypatch):
    calls = []
    original = tf.raw_ops.ResourceApplyAdam
    monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam", lambda **kw: calls.append(1) or original(**kw))
    _train(Adam(0.01), steps=1, graph=False)
    assert len(calls) == 2


def test_registry_builds_them_and_config_round_trips():
    adam, adamw = build_optimizer("adam", 1e-3), build_optimizer("adamw", 1e-3, weight_decay=0.01)
    assert type(adam) is Adam and type(adamw) is AdamW
    for optimizer in (adam, adamw):
        clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(clone) is type(optimizer) and clone.get_config() == optimizer.get_config()


def test_checkpoint_state_loads_into_keras_adam(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(Adam(0.01), "mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert type(reloaded.optimizer) is Adam
    for a, b in zip(reloaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
