"""Batch normalisation whose training step costs fewer passes over the activations.

Keras' `BatchNormalization` trains through automatic differentiation of its moments and its
affine transform; on a CPU without XLA every elementwise op of that graph is a separate pass over
the activations, and for small networks such as `conv4` they are most of a training step. This
layer computes the same function, with the same weights and configuration, but in training it
gives TensorFlow the closed-form gradient of batch normalisation, which needs three reductions
and one fused affine combination instead of about a dozen passes (measured with
`bench/throughput.py`: see BENCHMARKS.md).

Everything outside training with batch statistics (inference, a frozen layer, masks, batch
renormalisation, synchronised statistics) is Keras' own code path.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="embedding_net")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a hand-written gradient for training.

    Takes exactly the arguments of `keras.layers.BatchNormalization`; its weights (`gamma`,
    `beta`, `moving_mean`, `moving_variance`) are interchangeable with Keras' layer.

    With batch statistics over the axes `A` (all but `axis`), `n` values per channel,
    `x_hat = (x - mean) / sqrt(var + epsilon)` and `y = gamma * x_hat + beta`, the gradients
    are `d_beta = sum_A(dy)`, `d_gamma = sum_A(dy * x_hat)` and
    `dx = gamma / sqrt(var + epsilon) * (dy - d_beta / n - x_hat * d_gamma / n)`.
    """

    def _uses_keras_path(self, training, mask):
        return not (training and self.trainable) or mask is not None or self.renorm or self.synchronized

    def call(self, inputs, training=None, mask=None):
        if self._uses_keras_path(training, mask):
            return super().call(inputs, training=training, mask=mask)
        # Statistics in at least float32, as Keras does (float16 overflows).
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        rank = len(x.shape)
        channel_axis = self.axis % rank
        axes = [i for i in range(rank) if i != channel_axis]
        shape = [1] * rank
        shape[channel_axis] = x.shape[channel_axis]
        # Copies: the gradient function must see tensors, not the layer's variables.
        gamma = ops.copy(ops.cast(self.gamma, dtype)) if self.scale else ops.ones(shape[channel_axis], dtype)
        beta = ops.copy(ops.cast(self.beta, dtype)) if self.center else ops.zeros(shape[channel_axis], dtype)
        outputs, mean, variance = _normalize(x, gamma, beta, axes, shape, self.epsilon)
        mean = ops.cast(mean, self.moving_mean.dtype)
        variance = ops.cast(variance, self.moving_variance.dtype)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


def _normalize(x, gamma, beta, axes, shape, epsilon):
    """`(gamma * x_hat + beta, mean, variance)` with the closed-form gradient of the first."""

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        mean = ops.mean(x, axis=axes)
        variance = ops.mean(ops.square(x - ops.reshape(mean, shape)), axis=axes)
        inverse_std = ops.rsqrt(variance + epsilon)
        scale = gamma * inverse_std
        outputs = x * ops.reshape(scale, shape) + ops.reshape(beta - mean * scale, shape)
        count = ops.cast(ops.size(x) // ops.size(mean), x.dtype)

        def gradient(*args, upstream=None):
            # The statistics feed only the moving averages, which are not differentiated.
            d_outputs = args[0] if upstream is None else upstream[0]
            d_beta = ops.sum(d_outputs, axis=axes)
            # sum(dy * x_hat) = (sum(dy * x) - mean * sum(dy)) / std: one product, no x_hat.
            d_gamma = (ops.sum(d_outputs * x, axis=axes) - mean * d_beta) * inverse_std
            # dx = scale * dy + x * slope + offset, per channel constants folded from the formula.
            slope = -scale * inverse_std * d_gamma / count
            offset = -scale * d_beta / count - slope * mean
            d_x = d_outputs * ops.reshape(scale, shape) + (
                x * ops.reshape(slope, shape) + ops.reshape(offset, shape))
            return d_x, d_gamma, d_beta

        return (outputs, mean, variance), gradient

    outputs, mean, variance = normalize(x, gamma, beta)
    return outputs, ops.stop_gradient(mean), ops.stop_gradient(variance)
