"""Optimizers written against the Keras 3 optimizer API.

`RAdam`: Rectified Adam (Liu et al. 2019, "On the Variance of the Adaptive Learning Rate and
Beyond", https://arxiv.org/abs/1908.03265).
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="embedding_net")
class RAdam(keras.optimizers.Optimizer):
    """Rectified Adam.

    Per step `t` (1-based), for a gradient `g`:

        m_t    = beta_1 * m + (1 - beta_1) * g
        v_t    = beta_2 * v + (1 - beta_2) * g**2
        m_hat  = m_t / (1 - beta_1**t)
        rho_inf = 2 / (1 - beta_2) - 1
        rho_t  = rho_inf - 2 * t * beta_2**t / (1 - beta_2**t)
        if rho_t > rectification_threshold:
            l_t = sqrt(1 - beta_2**t) / (sqrt(v_t) + epsilon)
            r_t = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
            variable -= lr * r_t * m_hat * l_t
        else:
            variable -= lr * m_hat            # SGD with (bias-corrected) momentum

    Epsilon placement: as in `keras.optimizers.Adam` ("epsilon hat" of Kingma & Ba), epsilon is
    added to `sqrt(v_t)` *before* the bias correction, i.e. `l_t = sqrt(1 - beta_2**t) /
    (sqrt(v_t) + epsilon)`, which equals `1 / (sqrt(v_hat) + epsilon / sqrt(1 - beta_2**t))`
    with `v_hat = v_t / (1 - beta_2**t)`.

    The branch is chosen with `ops.where` on the scalar condition (no Python branching on
    tensors), so the optimizer traces into a single graph. The scalar schedule (`rho_t`, `r_t`,
    bias corrections) is computed in float64: `rho_t` is a difference of two numbers around
    `rho_inf` (1999 for `beta_2=0.999`), and float32 would lose ~1e-4 absolute there, which is a
    large relative error in `rho_t - 4` right after the threshold. The result is cast to the
    variable's dtype before it touches the moments.

    With the defaults (`beta_2=0.999`, threshold 5) steps 1-5 are un-rectified
    (`rho_5 ~= 4.996`) and steps 6+ are rectified.

    Args:
        learning_rate: float, `LearningRateSchedule` or callable. Defaults to 0.001.
        beta_1: decay rate of the first moment. Defaults to 0.9.
        beta_2: decay rate of the second moment. Defaults to 0.999.
        epsilon: small constant added to `sqrt(v_t)` (see above). Defaults to 1e-7.
        rectification_threshold: the adaptive (rectified) update is used when `rho_t` exceeds
            this value. The paper's Algorithm 2 uses `rho_t > 4` (the smallest value for which
            `r_t` is defined); the reference PyTorch implementation and most ports use 5, which
            is the default here.
        **kwargs: the base optimizer's arguments (`weight_decay`, `clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        rectification_threshold=5.0,
        name="radam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(beta_1) < 1.0:
            raise ValueError(f"beta_1 must be in [0, 1), got {beta_1}")
        if not 0.0 < float(beta_2) < 1.0:
            raise ValueError(f"beta_2 must be in (0, 1), got {beta_2}")
        if float(rectification_threshold) < 4.0:
            raise ValueError(
                "rectification_threshold must be >= 4 (r_t is undefined for rho_t <= 4), "
                f"got {rectification_threshold}"
            )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.rectification_threshold = rectification_threshold

    def build(self, var_list):
        """Creates one `momentum` and one `velocity` slot per variable."""
        if self.built:
            return
        super().build(var_list)
        self._momentums = []
        self._velocities = []
        for var in var_list:
            self._momentums.append(self.add_variable_from_reference(var, "momentum"))
            self._velocities.append(self.add_variable_from_reference(var, "velocity"))

    def update_step(self, gradient, variable, learning_rate):
        """Applies one RAdam step to `variable`."""
        dtype = variable.dtype
        f64 = "float64"
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)

        # Scalar schedule in float64.
        t = ops.cast(self.iterations + 1, f64)
        b1 = ops.cast(self.beta_1, f64)
        b2 = ops.cast(self.beta_2, f64)
        b1_power = ops.power(b1, t)
        b2_power = ops.power(b2, t)
        one_minus_b2_power = 1.0 - b2_power
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2_power / one_minus_b2_power
        rectify = rho_t > ops.cast(self.rectification_threshold, f64)
        # Clamp so the unselected branch stays finite (rho_t <= 4 early on).
        rho_safe = ops.maximum(rho_t, 4.0)
        r_t = ops.sqrt(
            ((rho_safe - 4.0) * (rho_safe - 2.0) * rho_inf)
            / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_safe)
        )
        inv_b1_correction = ops.cast(1.0 / (1.0 - b1_power), dtype)
        adaptive_scale = ops.cast(r_t * ops.sqrt(one_minus_b2_power), dtype)

        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(
            v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2)
        )

        m_hat = ops.multiply(m, inv_b1_correction)
        adaptive = ops.divide(
            ops.multiply(m_hat, adaptive_scale),
            ops.add(ops.sqrt(v), ops.cast(self.epsilon, dtype)),
        )
        step = ops.where(rectify, adaptive, m_hat)
        self.assign_sub(variable, ops.multiply(step, lr))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "rectification_threshold": self.rectification_threshold,
            }
        )
        return config
