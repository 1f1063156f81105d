"""RAdam: step-by-step against a NumPy float64 reference, fit, config and .keras round trips."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from embedding_net.optim.radam import RAdam  # noqa: E402


def reference_radam(params, grads_per_step, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                    threshold=5.0):
    """The paper's rule in float64; epsilon placed as in RAdam (added to sqrt(v_t)).

    Returns the parameter trajectory and, per step, whether it was rectified.
    """
    params = [np.asarray(p, np.float64).copy() for p in params]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    rho_inf = 2.0 / (1.0 - beta_2) - 1.0
    history, rectified = [], []
    for t, grads in enumerate(grads_per_step, start=1):
        rho_t = rho_inf - 2.0 * t * beta_2**t / (1.0 - beta_2**t)
        rect = rho_t > threshold
        rectified.append(rect)
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            ms[i] = beta_1 * ms[i] + (1.0 - beta_1) * g
            vs[i] = beta_2 * vs[i] + (1.0 - beta_2) * g * g
            m_hat = ms[i] / (1.0 - beta_1**t)
            if rect:
                l_t = np.sqrt(1.0 - beta_2**t) / (np.sqrt(vs[i]) + epsilon)
                r_t = np.sqrt(((rho_t - 4) * (rho_t - 2) * rho_inf)
                              / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                params[i] = params[i] - lr * m_hat * r_t * l_t
            else:
                params[i] = params[i] - lr * m_hat
        history.append([p.copy() for p in params])
    return history, rectified


@pytest.mark.parametrize(
    "kwargs, expected_first_rectified",
    [
        ({}, 6),  # rho_5 ~= 4.996 < 5, rho_6 ~= 5.994
        ({"rectification_threshold": 4.0}, 5),  # the paper's rho_t > 4
        ({"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6}, 6),
    ],
)
def test_matches_numpy_reference(kwargs, expected_first_rectified):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    steps = 10
    # The last variable starts at zero: there the value *is* the accumulated update, so the
    # rtol check is not diluted by float32 rounding of O(1) parameters.
    init = [rng.normal(size=s) for s in shapes[:-1]] + [np.zeros(shapes[-1])]
    grads = [[rng.normal(size=s) for s in shapes] for _ in range(steps)]

    ref_kwargs = {
        "lr": kwargs.get("learning_rate", 1e-3),
        "beta_1": kwargs.get("beta_1", 0.9),
        "beta_2": kwargs.get("beta_2", 0.999),
        "epsilon": kwargs.get("epsilon", 1e-7),
        "threshold": kwargs.get("rectification_threshold", 5.0),
    }
    history, rectified = reference_radam(init, grads, **ref_kwargs)
    # Both regimes are covered, switching where expected.
    assert rectified.index(True) + 1 == expected_first_rectified
    assert not any(rectified[: expected_first_rectified - 1])
    assert all(rectified[expected_first_rectified - 1:])

    variables = [keras.Variable(p.astype("float32")) for p in init]
    opt = RAdam(**kwargs)
    for step in range(steps):
        opt.apply_gradients(
            [(keras.ops.convert_to_tensor(g.astype("float32")), v)
             for g, v in zip(grads[step], variables)]
        )
        for i, (v, expected) in enumerate(zip(variables, history[step])):
            # Also compare the displacement from the start (the quantity RAdam produces), with
            # an atol of the float32 rounding a parameter of this size accumulates over the steps.
            got = keras.ops.convert_to_numpy(v).astype(np.float64)
            start = init[i].astype(np.float32).astype(np.float64)
            rounding = 2 * (step + 1) * np.finfo(np.float32).eps * np.abs(start) + 1e-12
            np.testing.assert_array_less(
                np.abs((got - start) - (expected - init[i])),
                1e-5 * np.abs(expected - init[i]) + rounding, err_msg=f"step {step + 1}")
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7,
                                       err_msg=f"step {step + 1}")
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == steps


def test_unrectified_steps_are_momentum_sgd():
    """Early steps ignore gradient scale: update = lr * m_hat, so step 1 moves by lr * g."""
    v = keras.Variable(np.zeros(3, "float32"))
    g = np.array([100.0, -0.01, 3.0], "float32")
    RAdam(learning_rate=0.1).apply_gradients([(keras.ops.convert_to_tensor(g), v)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), -0.1 * g, rtol=1e-6)


def test_fit_reduces_loss():
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 4)).astype("float32")
    w = np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    y = x @ w + 0.5
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=RAdam(learning_rate=0.05), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    hist = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert after < 0.5 * before


def test_config_round_trip():
    opt = RAdam(learning_rate=0.02, beta_1=0.85, beta_2=0.99, epsilon=1e-6,
                rectification_threshold=4.5, weight_decay=0.01, clipnorm=1.0)
    config = opt.get_config()
    for key, value in {"beta_1": 0.85, "beta_2": 0.99, "epsilon": 1e-6,
                       "rectification_threshold": 4.5, "weight_decay": 0.01,
                       "clipnorm": 1.0}.items():
        assert config[key] == pytest.approx(value)
    assert config["learning_rate"] == pytest.approx(0.02)
    clone = RAdam.from_config(config)
    assert clone.get_config() == config

    # Through the registered name as well.
    serialized = keras.optimizers.serialize(opt)
    assert keras.saving.get_registered_name(RAdam) == "embedding_net>RAdam"
    restored = keras.optimizers.deserialize(serialized)
    assert isinstance(restored, RAdam)
    assert restored.get_config() == config


def test_schedule_learning_rate_round_trip():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=10, decay_rate=0.5)
    opt = RAdam(learning_rate=schedule)
    clone = RAdam.from_config(opt.get_config())
    assert isinstance(clone._learning_rate, keras.optimizers.schedules.ExponentialDecay)
    assert clone._learning_rate.get_config() == schedule.get_config()


def test_invalid_threshold():
    with pytest.raises(ValueError):
        RAdam(rectification_threshold=3.0)


def test_save_and_load_keras_file(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="relu"),
                              keras.layers.Dense(1)])
    opt = RAdam(learning_rate=0.003, beta_1=0.8, beta_2=0.995, epsilon=1e-6,
                rectification_threshold=4.0, weight_decay=0.001)
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # builds the slots, iterations = 4
    path = str(tmp_path / "radam_model.keras")
    model.save(path)

    loaded = keras.saving.load_model(path, safe_mode=True)  # compile=True by default
    assert isinstance(loaded.optimizer, RAdam)
    expected, got = opt.get_config(), loaded.optimizer.get_config()
    for key in ("learning_rate", "beta_1", "beta_2", "epsilon", "rectification_threshold",
                "weight_decay"):
        assert got[key] == pytest.approx(expected[key]), key
    # Optimizer state (iterations, moments) is restored too.
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 4
    for a, b in zip(opt.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    # And it keeps training.
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)
