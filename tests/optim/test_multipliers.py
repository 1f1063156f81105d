"""Per-variable learning-rate multipliers: one wrapped step equals the wrapped optimizer's own step
with learning_rate x multiplier on the backbone and learning_rate on the head (the reference: two
separate optimizers), for adaptive rules where scaling gradients would not do it; layer-wise
decay; serialisation with the model."""

import keras
import numpy as np
import pytest

from embedding_net.optim import RAdam
from embedding_net.optim.multipliers import LearningRateMultipliers, backbone_multipliers

RATE = 0.01
OPTIMIZERS = {
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "sgd": lambda rate: keras.optimizers.SGD(rate, momentum=0.9),
    "adamw": lambda rate: keras.optimizers.AdamW(rate, weight_decay=0.1),
    "rmsprop": lambda rate: keras.optimizers.RMSprop(rate),
    "radam": lambda rate: RAdam(rate),
}


def two_part_model(seed=0):
    """A 'backbone' of two dense blocks and a 'head', with explicit (stable) layer names."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    backbone = keras.Sequential([keras.layers.Dense(6, activation="tanh", name="block0"),
                                 keras.layers.Dense(4, activation="tanh", name="block1")], name="backbone")
    outputs = keras.layers.Dense(3, name="head")(backbone(inputs))
    return keras.Model(inputs, outputs), backbone


def gradients(model, data, target):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.square(model(data) - target))
    return tape.gradient(loss, model.trainable_variables)


def batches(steps):
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 3)).astype("float32"))
            for _ in range(steps)]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_wrapped_steps_equal_two_optimizers_with_scaled_rates(name):
    # Three steps, so Adam's bias correction and momentum states are exercised.
    model, backbone = two_part_model()
    wrapped = LearningRateMultipliers(OPTIMIZERS[name](RATE), backbone_multipliers(backbone, multiplier=0.1))
    reference, ref_backbone = two_part_model()
    slow, fast = OPTIMIZERS[name](RATE * 0.1), OPTIMIZERS[name](RATE)
    ref_backbone_vars = {id(v) for v in ref_backbone.trainable_variables}
    for data, target in batches(3):
        wrapped.apply(gradients(model, data, target), model.trainable_variables)
        grads = gradients(reference, data, target)
        pairs = list(zip(grads, reference.trainable_variables))
        slow.apply(*zip(*[(g, v) for g, v in pairs if id(v) in ref_backbone_vars]))
        fast.apply(*zip(*[(g, v) for g, v in pairs if id(v) not in ref_backbone_vars]))
    moved = False
    for got, expected, initial in zip(model.weights, reference.weights, two_part_model()[0].weights):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6, err_msg=got.path)
        moved |= not np.allclose(got.numpy(), initial.numpy())
    assert moved and int(wrapped.iterations.numpy()) == 3 == int(wrapped.optimizer.iterations.numpy())


def test_scaling_gradients_would_not_be_the_same_for_adam():
    # Why the wrapper exists: Adam's first step is lr * sign(g) whatever the gradient's scale.
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = keras.optimizers.Adam(RATE)
    optimizer.apply([keras.ops.convert_to_tensor(np.full(3, 0.1, "float32"))], [variable])
    np.testing.assert_allclose(variable.numpy(), 1 - RATE, rtol=1e-4)  # not 1 - 0.1 * RATE


def test_multipliers_follow_a_schedule_and_a_settable_rate():
    schedule = keras.optimizers.schedules.ExponentialDecay(RATE, decay_steps=1, decay_rate=0.5)
    wrapped = LearningRateMultipliers(keras.optimizers.SGD(schedule), {"w": 0.5})
    variable = keras.Variable(np.zeros(1, "float32"), name="w")
    assert variable.path == "w"
    for _ in range(2):
        wrapped.apply([keras.ops.ones((1,))], [variable])
    np.testing.assert_allclose(variable.numpy(), [-(RATE + RATE / 2) * 0.5], rtol=1e-6)
    settable = LearningRateMultipliers(keras.optimizers.SGD(RATE), {})
    settable.learning_rate = 0.5  # what ReduceLROnPlateau does
    other = keras.Variable(np.zeros(1, "float32"))
    settable.apply([keras.ops.ones((1,))], [other])
    np.testing.assert_allclose(other.numpy(), [-0.5])


def test_layer_decay_counts_blocks_from_the_top():
    model, backbone = two_part_model()
    block0, block1 = backbone.layers
    multipliers = backbone_multipliers(backbone, multiplier=0.5, blocks=[block0, block1], layer_decay=0.8)
    assert multipliers[block1.kernel.path] == pytest.approx(0.5 * 0.8)
    assert multipliers[block0.bias.path] == pytest.approx(0.5 * 0.8 ** 2)
    assert not any(path.startswith("head") for path in multipliers)
    assert backbone_multipliers(backbone) == {}  # 1.0 everywhere: nothing to wrap
    # Variables outside the listed blocks (a final norm, a pooling head) take depth 0.
    only_first = backbone_multipliers(backbone, multiplier=0.5, blocks=[block0], layer_decay=0.8)
    assert only_first[block1.kernel.path] == 0.5 and only_first[block0.kernel.path] == pytest.approx(0.4)


@pytest.mark.parametrize("arguments, match", [
    ({"multiplier": 0.0}, r"`multiplier` must be in \(0, 1\]. Received: 0.0"),
    ({"multiplier": 1.5}, "Received: 1.5"),
    ({"layer_decay": 0.9}, "`layer_decay` needs the backbone's `blocks`"),
])
def test_backbone_multipliers_refuse_bad_values(arguments, match):
    with pytest.raises(ValueError, match=match):
        backbone_multipliers(two_part_model()[1], **arguments)


def test_wrapper_refuses_bad_arguments():
    with pytest.raises(ValueError, match="Received: 'adam'"):
        LearningRateMultipliers("adam", {})
    with pytest.raises(ValueError, match="'x': -1"):
        LearningRateMultipliers(keras.optimizers.Adam(), {"x": -1})


def test_compiled_fit_saves_and_reloads_with_the_wrapper(tmp_path):
    model, backbone = two_part_model()
    wrapped = LearningRateMultipliers(OPTIMIZERS["adamw"](RATE), backbone_multipliers(backbone, multiplier=0.1))
    model.compile(optimizer=wrapped, loss="mse")
    (data, target), = batches(1)
    model.fit(data, target, epochs=2, verbose=0)
    config = keras.optimizers.serialize(model.optimizer)
    restored = keras.optimizers.deserialize(config)
    assert isinstance(restored, LearningRateMultipliers) and restored.multipliers == wrapped.multipliers
    assert isinstance(restored.optimizer, keras.optimizers.AdamW) and restored.optimizer.weight_decay == 0.1
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, LearningRateMultipliers)
    assert loaded.optimizer.multipliers == wrapped.multipliers
    for got, expected in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(got.numpy()), np.asarray(expected.numpy()), err_msg=got.path)
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6)
