"""A trained run, ready to classify images from Python as test.py does, in three lines:

    from embedding_net.inference import Classifier
    classifier = Classifier.load("work_dirs/omniglot")      # model, gallery and threshold of a run
    print(classifier.classify("query.png"))                 # or an image array, of any size

Files are read by `read_image` and arrays prepared by `prepare_image`, the one resizing that
training, test.py and this class share, so an image gives the same answer whichever way it comes
in. TensorFlow-free when the run has a fresh LiteRT copy (see `load_inference_model`).
"""

import os
import typing

import numpy as np

from embedding_net.data.images import prepare_image, read_image
from embedding_net.errors import EncodingsError
from embedding_net.inference.encodings import embed_images, model_image_shape
from embedding_net.inference.gallery import open_gallery
from embedding_net.inference.litert import load_inference_model

GALLERY_FILES = ("encodings.enidx", "encodings.npz")  # what train.py writes, preferred first


class Prediction(typing.NamedTuple):
    """`label`: the nearest class, or "unknown" beyond the gallery's threshold or the class's
    radius; `distance`: to the nearest class; `nearest`: `(class, distance)` pairs, nearest first."""

    label: str
    distance: float
    nearest: list


class Classifier:
    """An embedding model and the gallery it classifies against.

    Args:
        model: an embedding model (Keras, or the LiteRT copy of `load_inference_model`).
        gallery: a `Gallery` (`open_gallery`) made with that model.
        threshold: the distance beyond which the answer is "unknown"; "stored" takes the one
            calibrated by train.py (or inherited at enrolment) from the gallery; None: no limit.
        rejection: True also applies the per-class radii stored in the gallery, when it has them.
        top_k: how many nearest classes each prediction lists.
    """

    def __init__(self, model, gallery, threshold="stored", rejection=True, top_k=5):
        self.model = model
        self.gallery = gallery
        self.threshold = gallery.metadata.get("threshold") if threshold == "stored" else threshold
        self.rejection = rejection
        self.top_k = top_k

    @classmethod
    def load(cls, run, encodings=None, prefer_litert=True, **options):
        """The classifier of a train.py run: `run` is its folder or its model.keras; `encodings`
        a gallery file (default: the run's encodings.enidx, else encodings.npz)."""
        weights = os.path.join(run, "model.keras") if os.path.isdir(run) else run
        folder = os.path.dirname(weights)
        if encodings is None:
            found = [os.path.join(folder, name) for name in GALLERY_FILES if os.path.exists(os.path.join(folder, name))]
            if not found:
                raise EncodingsError(f"no {' or '.join(GALLERY_FILES)} beside {weights}: pass encodings=")
            encodings = found[0]
        model = load_inference_model(weights, prefer_litert=prefer_litert)
        return cls(model, open_gallery(encodings, model=model, weights=weights), **options)

    def prepare(self, image):
        """A file path or an image array -> uint8 [H, W, C] at the model's input size."""
        height, width, channels = model_image_shape(self.model)
        if isinstance(image, (str, os.PathLike)):
            return read_image(os.fspath(image), (height, width), channels)
        return prepare_image(image, (height, width), channels)

    def embed(self, images):
        """Unit embeddings [N, D] of files or arrays (a list of either, mixed)."""
        return embed_images(self.model, np.stack([self.prepare(image) for image in images]))

    def classify_many(self, images):
        """One `Prediction` per file or array of `images`."""
        if len(images) == 0:
            return []
        rejection = self.gallery.rejection if self.rejection else None
        rows = self.gallery.classify(self.embed(images), self.top_k, self.threshold, rejection)
        return [Prediction(row["prediction"], float(row["distance"]), list(row["nearest"])) for row in rows]

    def classify(self, image):
        """The `Prediction` for one image: a file path, or an array [H, W] or [H, W, 1|3|4]
        (grayscale, RGB or RGBA) of any size."""
        return self.classify_many([image])[0]
