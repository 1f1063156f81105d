"""Files written before the package layout changed still load: `conv4_gem_v0.1.0.keras` was
saved by embedding_net 0.1.0 (commit da66f0e, the flat layout) with the embeddings it gave
for four images; the registered names of its layers (`embedding_net>ImagePreprocessing`, ...)
are kept, so it loads in safe mode and embeds alike."""

import os

import keras
import numpy as np

import embedding_net.models  # noqa: F401  (registers the layers)
from embedding_net.models import load_embedding_model

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")


def test_a_model_saved_by_version_0_1_loads_and_embeds_alike():
    expected = np.load(os.path.join(FILES, "conv4_gem_v0.1.0_io.npz"), allow_pickle=False)
    path = os.path.join(FILES, "conv4_gem_v0.1.0.keras")
    for model in (load_embedding_model(path), keras.saving.load_model(path, safe_mode=True, compile=False)):
        np.testing.assert_allclose(model.predict(expected["images"], verbose=0), expected["embeddings"],
                                   rtol=1e-5, atol=1e-6)
