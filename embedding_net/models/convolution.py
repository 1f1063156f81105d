"""2-D convolution whose kernel gradient on small feature maps is one matrix product.

On CPUs, oneDNN computes a convolution's kernel gradient by blocking over the spatial cells
of the output. When the map is tiny and the channels many (ResNet's last stages at 64-112 px:
2 x 2 or 4 x 4 cells, 256-512 channels) there is little to block, and the kernel gradient of one
512-channel 3 x 3 convolution took 15 ms in float32 and 18 ms in bfloat16 on a 2-core Xeon,
most of a ResNet18 step's backward pass. The same gradient as the product of the input's
patches (`[B * cells, k * k * C_in]`) with the output gradient (`[B * cells, C_out]`) took 5
and 3 ms (`python bench/convolution.py` measures both ways per shape). Larger maps keep
oneDNN's kernel, which wins there because gathering the patches costs a copy of k * k times
the input.
"""

import math

import keras
from keras import ops

# Output maps of at most this many cells take the matrix-product gradient; measured crossover
# (bench/convolution.py): a 4 x 4 map still wins in bfloat16, loses slightly in float32.
MATMUL_GRADIENT_MAX_CELLS = {"bfloat16": 16, "float16": 16}
MATMUL_GRADIENT_MAX_CELLS_DEFAULT = 4


@keras.saving.register_keras_serializable(package="embedding_net")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (channels last, no dilation or groups) with a faster kernel gradient
    on small output maps; weights and configuration are interchangeable with Keras' layer.

    The forward pass and the input gradient are Keras' own (`ops.conv`, `ops.conv_transpose`);
    only the kernel's gradient is computed as a matrix product, when the output map has at
    most `MATMUL_GRADIENT_MAX_CELLS` cells for the layer's compute dtype.
    """

    def convolution_op(self, inputs, kernel):
        if not self._matmul_gradient(inputs.shape):
            return super().convolution_op(inputs, kernel)
        return _convolve(inputs, ops.copy(kernel), tuple(self.strides), self.padding)

    def _matmul_gradient(self, input_shape):
        if (self.data_format != "channels_last" or self.groups != 1 or tuple(self.dilation_rate) != (1, 1)
                or input_shape[1] is None or input_shape[2] is None):
            return False
        height, width = (_output_length(input_shape[axis], self.kernel_size[axis - 1], self.strides[axis - 1],
                                        self.padding) for axis in (1, 2))
        limit = MATMUL_GRADIENT_MAX_CELLS.get(self.compute_dtype, MATMUL_GRADIENT_MAX_CELLS_DEFAULT)
        return height * width <= limit


def _output_length(length, kernel, stride, padding):
    if padding == "same":
        return math.ceil(length / stride)
    return (length - kernel) // stride + 1


def _same_padding(length, kernel, stride):
    """(before, after) zero padding of TensorFlow's `same` (the extra cell goes after)."""
    total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def _convolve(inputs, kernel, strides, padding):
    kernel_height, kernel_width, in_channels, out_channels = kernel.shape
    height, width = inputs.shape[1], inputs.shape[2]

    @ops.custom_gradient
    def convolve(inputs, kernel):
        outputs = ops.conv(inputs, kernel, strides=strides, padding=padding)

        def gradient(*args, upstream=None):
            d_outputs = args[0] if upstream is None else upstream
            padded = inputs
            if padding == "same":
                pads = [_same_padding(height, kernel_height, strides[0]),
                        _same_padding(width, kernel_width, strides[1])]
                padded = ops.pad(inputs, [(0, 0), pads[0], pads[1], (0, 0)])
            patches = _patches(padded, (kernel_height, kernel_width), strides, d_outputs.shape[1:3])
            d_kernel = ops.matmul(ops.transpose(patches), ops.reshape(d_outputs, (-1, out_channels)))
            d_kernel = ops.reshape(d_kernel, kernel.shape)
            d_inputs = ops.conv_transpose(d_outputs, kernel, strides=strides, padding=padding,
                                          output_padding=_output_padding(padding, strides, kernel.shape,
                                                                         (height, width)))
            return d_inputs, d_kernel

        return outputs, gradient

    return convolve(inputs, kernel)


def _patches(padded, kernel_size, strides, out_size):
    """`[B * out cells, kh * kw * C]`: every window of the padded map as a row, ordered (row,
    column, channel) like a flattened HWIO kernel.

    One strided slice per kernel offset; `ops.image.extract_patches` would convolve with a
    one-hot kernel of `(kh * kw * C)^2` weights, slower than the gradient it replaces.
    """
    (kernel_height, kernel_width), (stride_y, stride_x), (out_height, out_width) = kernel_size, strides, out_size
    windows = [padded[:, row: row + stride_y * (out_height - 1) + 1: stride_y,
                      column: column + stride_x * (out_width - 1) + 1: stride_x, :]
               for row in range(kernel_height) for column in range(kernel_width)]
    patches = ops.concatenate(windows, axis=-1) if len(windows) > 1 else windows[0]
    return ops.reshape(patches, (-1, patches.shape[-1]))


def _output_padding(padding, strides, kernel_shape, input_size):
    """The `output_padding` that makes the transposed convolution's output the input's size.

    Keras sizes it from the output map as `(out - 1) * stride + kernel - 2 * pad +
    output_padding` (`pad` = kernel // 2 for `same`, 0 for `valid`); a strided convolution
    maps several input sizes to one output size, so the difference is made explicit.
    """
    extra = []
    for length, kernel, stride in zip(input_size, kernel_shape[:2], strides):
        out = _output_length(length, kernel, stride, padding)
        pad = kernel // 2 if padding == "same" else 0
        extra.append(length - ((out - 1) * stride + kernel - 2 * pad))
    return tuple(extra)
