"""ArcFace (Deng et al. 2019): trainable class centres and an additive angular margin.

A Keras loss cannot own trainable variables, so the class centres live in a layer, `ArcFace`,
that turns `(embeddings, labels)` into logits; the training model ends with it and is trained
with `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`:

    training_model = build_arcface_model(embedding_model, num_classes)
    training_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    training_model.fit(arcface_batches(pk_dataset(...)), steps_per_epoch=...)
    embedding_model.save("embedding.keras")  # the shared tower is what is kept

The centres are discarded with the training model: only the embedding tower is saved and used.
The registered loss `arcface` is this layer: the training layer builds the model around it.
"""

import math

import keras
from keras import ops

from embedding_net.losses.proxies import ClassCentres, build_proxy_model
from embedding_net.losses.registry import register_loss


@register_loss("arcface", settings=("scale", "margin", "sub_centers", "proxy_lr_multiplier"), head="logits",
               proxy_lr_multiplier=1.0)
@keras.saving.register_keras_serializable(package="embedding_net")
class ArcFace(ClassCentres):
    """Cosine logits against trainable class centres, with an additive angular margin.

    With e the L2-normalised embedding, W_c the L2-normalised centre of class c, cos_c = e . W_c
    (clamped into [-1 + epsilon, 1 - epsilon]) and theta_c its angle, the logits are:

    - in training, with labels: s * cos(theta_y + m) for the true class y and s * cos_c for the
      others. cos(theta + m) = cos theta cos m - sin theta sin m, with sin theta =
      sqrt(1 - cos^2 theta): no arccos, and the clamp keeps the square root's gradient finite.
      cos(theta + m) stops decreasing once theta + m > pi, which would reward a true class
      pushed past pi - m; so there, i.e. when cos theta <= cos(pi - m), the target logit is
      s * (cos theta - m sin m) instead (the `th` / `mm` fallback of the reference
      implementation, a CosFace-like additive cosine margin that keeps the target logit
      decreasing in theta). With `easy_margin`,
      the margin is only applied where cos theta > 0 (theta < pi / 2) and the plain cosine is
      kept elsewhere.
    - at inference (`training=False`) or without labels: s * cos_c for every class.

    The layer computes and returns float32 whatever the global dtype policy (its `dtype`
    defaults to `"float32"`): half-precision cosines near +-1 would make the margin meaningless.

    Called as `layer(embeddings [B, D], labels [B] or [B, 1])` or `layer(embeddings)`; returns
    logits [B, num_classes].

    Args:
        num_classes: the number of training classes (one centre each), >= 1.
        scale: s, the scale of the cosine logits, > 0.
        margin: m, the additive angle in radians, 0 <= m < pi.
        easy_margin: apply the margin only where cos theta > 0 (see above).
        epsilon: the cosines are clamped into [-1 + epsilon, 1 - epsilon], 0 < epsilon < 1.
        sub_centers: centres per class (sub-center ArcFace, Deng et al. 2020): a class's cosine
            is its nearest centre's, so noisy images can gather at a centre of their own.
    """

    def __init__(self, num_classes, scale=30.0, margin=0.5, easy_margin=False, epsilon=1e-6, sub_centers=1, **kwargs):
        super().__init__(num_classes, sub_centers=sub_centers, **kwargs)
        if not scale > 0:
            raise ValueError(f"`scale` must be > 0. Received: {scale!r}")
        if not 0 <= margin < math.pi:
            raise ValueError(f"`margin` must be in [0, pi). Received: {margin!r}")
        if not 0 < epsilon < 1:
            raise ValueError(f"`epsilon` must be in (0, 1). Received: {epsilon!r}")
        self.scale = float(scale)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)
        self.epsilon = float(epsilon)

    def cosines(self, embeddings):
        """The cosines [B, num_classes] with the class centres, clamped into [-1 + epsilon, 1 - epsilon]."""
        return ops.clip(super().cosines(embeddings), -1.0 + self.epsilon, 1.0 - self.epsilon)

    def call(self, embeddings, labels=None, training=None):
        cosine = self.cosines(embeddings)
        if not training or labels is None or self.margin == 0.0:
            return self.scale * cosine
        sine = ops.sqrt(1.0 - ops.square(cosine))  # >= sqrt(epsilon): finite gradient
        shifted = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        if self.easy_margin:
            shifted = ops.where(cosine > 0.0, shifted, cosine)
        else:
            threshold = math.cos(math.pi - self.margin)
            shifted = ops.where(cosine > threshold, shifted, cosine - math.sin(math.pi - self.margin) * self.margin)
        true_class = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), self.num_classes, dtype="bool")
        return self.scale * ops.where(true_class, shifted, cosine)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "margin": self.margin, "easy_margin": self.easy_margin,
                       "epsilon": self.epsilon})
        return config


def build_arcface_model(embedding_model, num_classes, scale=30.0, margin=0.5, easy_margin=False,
                        name="arcface_model"):
    """The ArcFace training model: inputs `(image, label)`, output logits [B, num_classes].

    Train it with `keras.losses.SparseCategoricalCrossentropy(from_logits=True)` on batches
    `((images, labels), labels)` (see `arcface_batches`): the label is an input because the
    margin goes on the true class. `fit` runs the layer with `training=True` (margin applied);
    `evaluate` and `predict` give the plain scaled cosines, so a validation loss has no margin
    (and needs labels of training classes). After training, keep and save `embedding_model` (the shared tower, also
    `training_model.get_layer(embedding_model.name)`); the class centres are not needed.

    Args:
        embedding_model: the tower, e.g. from `build_embedding_model`; uint8 images in.
        num_classes: the number of training classes; labels are ids in [0, num_classes).
        scale, margin, easy_margin: see `ArcFace`.
    """
    head = ArcFace(num_classes, scale=scale, margin=margin, easy_margin=easy_margin, name="arcface")
    return build_proxy_model(embedding_model, head, name=name)


def arcface_inputs(images, labels):
    """`(images, labels)` -> `((images, labels), labels)`: one batch as the ArcFace model takes
    it (a named function rather than a lambda, for `tf.data.Dataset.map`)."""
    return (images, labels), labels


def arcface_batches(dataset):
    """Maps a dataset of `(images, labels)` batches (e.g. `pk_dataset`) to the
    `((images, labels), labels)` batches of `build_arcface_model`."""
    return dataset.map(arcface_inputs)
