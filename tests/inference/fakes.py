"""A TensorFlow-free stand-in for the embedding model, and labelled folders of random images."""

import os

import cv2
import numpy as np

PROJECTION = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)


class FakeModel:
    """Embeds 8 x 8 grayscale images by a fixed projection, unit length; counts its calls and
    raises KeyboardInterrupt (as Ctrl-C would) on call `fail_at`."""

    input_shape, output_shape = (None, 8, 8, 1), (None, 4)

    def __init__(self, fail_at=None):
        self.calls, self.images, self.fail_at = 0, 0, fail_at

    def predict(self, images, batch_size=None, verbose=0):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.images += len(images)
        x = np.asarray(images, np.float32).reshape(len(images), -1) @ PROJECTION
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def make_folder(root, classes=3, per_class=5, seed=0, size=8):
    """`root/<class>/<i>.png` of random grayscale images; returns `root` as a string."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(os.path.join(root, f"class_{c}", f"{i:04d}.png"),
                        rng.integers(0, 256, (size, size), dtype=np.uint8))
    return str(root)
