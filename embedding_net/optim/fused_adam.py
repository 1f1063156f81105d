"""Adam and AdamW whose dense update is one fused kernel per variable on TensorFlow.

Keras' Adam updates each variable with about ten elementwise operations (two moment updates,
a square, a square root, a division, three assignments...), each a pass over the variable. For
ResNet18's 11M parameters that is about a tenth of a training step on a 2-core CPU, where
PyTorch's Adam runs fused loops. TensorFlow's `ResourceApplyAdam` kernel computes the same
update (`m += (1 - beta_1) (g - m)`, `v += (1 - beta_2) (g^2 - v)`, `w -= lr sqrt(1 - beta_2^t)
/ (1 - beta_1^t) m / (sqrt(v) + epsilon)`, Keras' own formula) in one pass.

The classes keep Keras' variables, names and configuration, so checkpoints and saved optimizer
states are interchangeable with `keras.optimizers.Adam` / `AdamW`. Keras' own update runs where
the fused kernel does not apply: another backend, `amsgrad`, sparse gradients, or inside a
`tf.distribute` strategy (whose variables update per replica through Keras' assignments).
"""

import keras


class _FusedAdamUpdate:
    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if (keras.backend.backend() != "tensorflow" or self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or tf.distribute.has_strategy()):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]), v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False)


def _handle(variable):
    """The resource handle of a Keras variable (or of a plain `tf.Variable`)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="embedding_net")
class Adam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam`, same arguments and state, with a fused update on TensorFlow."""


@keras.saving.register_keras_serializable(package="embedding_net")
class AdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` (decoupled weight decay, applied by Keras before the update),
    same arguments and state, with a fused update on TensorFlow."""
