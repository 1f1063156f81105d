"""Trainable class centres (proxies) and the losses that train against them: CosFace (Wang et
al. 2018) and Proxy Anchor (Kim et al. 2020); ArcFace (`arcface.py`) shares the centres.

A Keras loss cannot own trainable variables, so the centres live in a layer at the end of the
training model, and the embedding tower alone is kept after training (the centres are dropped,
as ArcFace's). Two kinds of head, named in the loss registry's `head` note:

- `logits`: the layer (ArcFace, CosFace) takes `(embeddings, labels)` and returns logits with the
  margin on the true class; trained with sparse categorical cross-entropy from logits.
- `cosines`: the layer `ClassCentres` returns the cosines [B, C] to every class, and the loss
  (Proxy Anchor) is a Keras loss called as `loss(labels[B], cosines[B, C])`.

Centres are column blocks of one weight [D, C * sub_centers]: class c owns columns
c * sub_centers ... (c + 1) * sub_centers - 1 and its cosine is the largest of them (sub-center
ArcFace, Deng et al. 2020; pytorch-metric-learning's layout).
"""

import keras
from keras import ops

from embedding_net.losses.reduction import gather_across_replicas, safe_mean, scale_for_replicas
from embedding_net.losses.pair_based import masked_logsumexp, unit_length
from embedding_net.losses.registry import register_loss


def _check_positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{key}` must be an integer >= 1. Received: {value!r}")


@keras.saving.register_keras_serializable(package="embedding_net")
class ClassCentres(keras.layers.Layer):
    """The cosine [B, num_classes] of each embedding with its nearest centre of every class.

    Computes and returns float32 whatever the dtype policy (its `dtype` defaults to float32).

    Args:
        num_classes: the number of training classes, >= 1.
        sub_centers: centres per class, >= 1; a class's cosine is the largest of its centres'.
    """

    def __init__(self, num_classes, sub_centers=1, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("sub_centers", sub_centers)
        self.num_classes = num_classes
        self.sub_centers = sub_centers

    def build(self, embeddings_shape, labels_shape=None):
        self.centers = self.add_weight(
            name="centers", shape=(embeddings_shape[-1], self.num_classes * self.sub_centers),
            initializer="glorot_uniform", dtype="float32")

    def cosines(self, embeddings):
        """The cosines [B, num_classes], each class's the largest of its sub-centres'."""
        centres = ops.transpose(unit_length(ops.transpose(ops.cast(self.centers, "float32"))))
        cosine = ops.matmul(unit_length(embeddings), centres)
        if self.sub_centers > 1:
            cosine = ops.max(ops.reshape(cosine, (-1, self.num_classes, self.sub_centers)), axis=2)
        return cosine

    def call(self, embeddings, labels=None, training=None):
        del labels, training  # the cosines need no label; the margin heads below take them
        return self.cosines(embeddings)

    def compute_output_shape(self, embeddings_shape, labels_shape=None):
        return (embeddings_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "sub_centers": self.sub_centers})
        return config


@register_loss("cosface", settings=("scale", "margin", "sub_centers", "proxy_lr_multiplier"), head="logits",
               proxy_lr_multiplier=1.0)
@keras.saving.register_keras_serializable(package="embedding_net")
class CosFace(ClassCentres):
    """CosFace / large-margin cosine logits (Wang et al. 2018): s * (cos_y - m) for the true
    class y in training, s * cos_c for the others and at inference (`training=False` or no
    labels). Called as `layer(embeddings, labels)`; returns float32 logits [B, num_classes].

    Args:
        num_classes, sub_centers: see `ClassCentres`.
        scale: s, > 0.
        margin: m, the cosine subtracted from the true class, >= 0.
    """

    def __init__(self, num_classes, scale=64.0, margin=0.35, sub_centers=1, **kwargs):
        super().__init__(num_classes, sub_centers=sub_centers, **kwargs)
        if not scale > 0:
            raise ValueError(f"`scale` must be > 0. Received: {scale!r}")
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0. Received: {margin!r}")
        self.scale, self.margin = float(scale), float(margin)

    def call(self, embeddings, labels=None, training=None):
        cosine = self.cosines(embeddings)
        if not training or labels is None:
            return self.scale * cosine
        true_class = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), self.num_classes)
        return self.scale * (cosine - self.margin * true_class)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "margin": self.margin})
        return config


@register_loss("proxy_anchor", settings=("margin", "alpha", "cross_replica", "proxy_lr_multiplier"), head="cosines",
               proxy_lr_multiplier=100.0)
@keras.saving.register_keras_serializable(package="embedding_net")
class ProxyAnchorLoss(keras.losses.Loss):
    """Proxy Anchor loss (Kim et al. 2020), called as `loss(labels[B], cosines[B, C])` with the
    cosines of `ClassCentres` (one proxy per class).

    With P+ the proxies of classes present in the batch, X_c+ the batch's embeddings of class c
    and X_c- the others:
    L = 1/|P+| sum_{c in P+} log(1 + sum_{x in X_c+} exp(-alpha (cos(x, c) - margin)))
      + 1/C    sum_{c}       log(1 + sum_{x in X_c-} exp( alpha (cos(x, c) + margin))),
    as pytorch-metric-learning's (its divisor reducer); 0 for an empty batch. The proxies
    train at `proxy_lr_multiplier` times the learning rate (the paper's 100).

    Under a `tf.distribute` strategy the value is divided by the number of replicas.

    Args:
        margin: the margin delta, >= 0.
        alpha: the scale, > 0.
        cross_replica: under a `tf.distribute` strategy, gather every replica's labels and
            cosines first, so the sums run over the global batch as on one device.
    """

    def __init__(self, margin=0.1, alpha=32.0, cross_replica=False, name="proxy_anchor_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0. Received: {margin!r}")
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0. Received: {alpha!r}")
        self.margin, self.alpha = float(margin), float(alpha)
        self.cross_replica = bool(cross_replica)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("ProxyAnchorLoss takes no sample weights")
        if self.cross_replica:
            y_true, y_pred, _ = gather_across_replicas(y_true, y_pred)
        cosines = ops.cast(y_pred, "float32")
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        own = ops.cast(ops.one_hot(labels, ops.shape(cosines)[1]), "bool")
        positive = masked_logsumexp(-self.alpha * (cosines - self.margin), own, axis=0, add_one=True)
        negative = masked_logsumexp(self.alpha * (cosines + self.margin), ops.logical_not(own), axis=0, add_one=True)
        present = ops.sum(ops.cast(ops.any(own, axis=0), "float32"))
        loss = safe_mean(ops.sum(positive), present) + safe_mean(ops.sum(negative), ops.shape(cosines)[1])
        return scale_for_replicas(loss)

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "alpha": self.alpha, "cross_replica": self.cross_replica})
        return config


def build_proxy_model(embedding_model, head, name="proxy_model"):
    """The training model of a proxy loss: the tower followed by the centres layer `head`.

    A `logits` head (ArcFace, CosFace) takes the label too, for the margin: inputs
    `(image, label)`, batches `((images, labels), labels)` (`arcface_batches`). A `ClassCentres`
    head takes the image only: batches `(images, labels)`. Keep and save `embedding_model`.
    """
    image = keras.Input(embedding_model.input_shape[1:], dtype=embedding_model.inputs[0].dtype, name="image")
    if type(head) is ClassCentres:
        return keras.Model(image, head(embedding_model(image)), name=name)
    label = keras.Input((), dtype="int32", name="label")
    return keras.Model([image, label], head(embedding_model(image), label), name=name)


def batch_loss(name, num_classes=None, **settings):
    """Any registered embedding loss as one function `value = loss(labels[B], embeddings[B, D])`,
    the class centres included where the loss has them (`num_classes` of them): for a look at a
    loss on a batch, its gradient or its memory, outside a training model. Returns the function
    and the centres layer (None for the pair-based losses); the layer builds on the first call.
    """
    from embedding_net.losses.registry import get_loss, loss_info

    head = loss_info(name).get("head")
    if head is None:
        loss = get_loss(name)(**settings)
        return (lambda labels, embeddings: loss(labels, embeddings)), None
    if num_classes is None:
        raise ValueError(f"the {name} loss trains class centres: pass num_classes")
    if head == "logits":  # the layer is the loss, trained with cross-entropy on its logits
        layer = get_loss(name)(num_classes, **settings)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return (lambda labels, embeddings: cross_entropy(labels, layer(embeddings, labels, training=True))), layer
    layer, loss = ClassCentres(num_classes), get_loss(name)(**settings)
    return (lambda labels, embeddings: loss(labels, layer(embeddings))), layer
