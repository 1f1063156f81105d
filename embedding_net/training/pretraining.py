"""Optional softmax pre-training: train the embedding model as a classifier, then drop the head.

The head is a normalised-softmax (cosine) classifier on the embedding model's own output: the
`ArcFace` layer with margin 0, i.e. logits s * cos(e, W_c) against one trainable centre per
class. Why there, and not on the pooled features before the projection:

- It trains every weight that is kept, the projection included; a head on the pooled features
  would leave the projection random for metric learning to start from.
- Normalised softmax with a temperature is itself a strong embedding objective (Wang et al.
  2017, NormFace; Zhai & Wu 2019, "Classification is a strong baseline for deep metric
  learning"), so the pre-trained embeddings are already useful on the unit sphere that the
  metric losses work on.
- It needs nothing from inside the model (any embedding model works, loaded ones included).

The embeddings are L2-normalised, so a plain dense softmax on them could only reach logits as
large as its weight norms; the fixed scale s (1 / temperature) lets the softmax become
confident from the start.
"""

import keras

from embedding_net.losses.arcface import ArcFace


def build_classifier_model(embedding_model, num_classes, scale=16.0, name="pretraining_classifier"):
    """The embedding model followed by the cosine classification head: images -> logits
    [B, num_classes]. The embedding model is shared, not copied."""
    image = keras.Input(embedding_model.input_shape[1:], dtype=embedding_model.inputs[0].dtype, name="image")
    logits = ArcFace(num_classes, scale=scale, margin=0.0, name="classification_head")(embedding_model(image))
    return keras.Model(image, logits, name=name)


def pretrain_classifier(embedding_model, dataset, num_classes, epochs, steps_per_epoch, learning_rate=1e-3,
                        scale=16.0, verbose=0):
    """Trains `embedding_model` in place as a softmax classifier of `num_classes` classes.

    A temporary model (`build_classifier_model`) is compiled with Adam and the sparse
    categorical cross-entropy on the logits, and fitted; the embedding model is one of its
    layers, so its weights are the ones trained. The head is then dropped: the embedding model
    keeps its layers, its config and its compile state, and saving it writes nothing of the
    head. Layers frozen in the embedding model stay frozen.

    Args:
        embedding_model: the model to pre-train, e.g. from `build_embedding_model`.
        dataset: a `tf.data.Dataset` (or anything `fit` takes) of `(images, labels)` batches,
            labels in [0, num_classes), e.g. `pk_dataset(...)`.
        num_classes: the number of classes of the labels, >= 2.
        epochs: the number of epochs, >= 1.
        steps_per_epoch: batches per epoch (the dataset may be endless), >= 1.
        learning_rate: the Adam learning rate, > 0.
        scale: the fixed logit scale s (1 / temperature), > 0.
        verbose: passed to `fit`.

    Returns:
        The `keras.callbacks.History` of the classifier's training (`history["loss"]`,
        `history["accuracy"]`).
    """
    for argument, value, low in (("num_classes", num_classes, 2), ("epochs", epochs, 1),
                                 ("steps_per_epoch", steps_per_epoch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{argument}` must be an integer >= {low}. Received: {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0. Received: {learning_rate!r}")
    classifier = build_classifier_model(embedding_model, num_classes, scale)
    classifier.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    # Built before fit, or TensorFlow traces the whole train step twice (see training._run).
    classifier.optimizer.build(classifier.trainable_variables)
    return classifier.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, shuffle=False, verbose=verbose)
