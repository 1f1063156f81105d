"""`import embedding_net` alone lets `keras.saving.load_model` find the package's layers, whichever
of the two is imported first, without importing TensorFlow itself. Each case runs in a fresh
Python, since the test process has imported both long ago."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loads the model in safe mode, embeds the saved images, and says what else the process holds.
LOAD = """
import json, sys
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
registration = sys.modules["embedding_net.registration"]
print(json.dumps({"embeddings": model.predict(np.load(sys.argv[2]), verbose=0).tolist(),
                  "modules": sorted(name for name in sys.modules if name.startswith("embedding_net")),
                  "hooks": sum(isinstance(finder, registration._Hook) for finder in sys.meta_path)}))
"""


def _python(code, *arguments):
    return subprocess.run([sys.executable, "-c", code, *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


def _registering_sources():
    """The modules whose source registers a Keras object, found the way a reader would: by grep."""
    names = []
    for path in sorted(glob.glob(os.path.join(ROOT, "embedding_net", "**", "*.py"), recursive=True)):
        with open(path, encoding="utf-8") as handle:
            if "@keras.saving.register_keras_serializable" in handle.read():
                names.append(os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."))
    return names


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import keras

    from embedding_net.models import build_embedding_model

    folder = tmp_path_factory.mktemp("registration")
    keras.utils.set_random_seed(0)
    model = build_embedding_model("conv4", (28, 28, 1), 16)
    model.save(str(folder / "model.keras"))
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.save(folder / "images.npy", images)
    return str(folder / "model.keras"), str(folder / "images.npy"), model.predict(images, verbose=0)


def test_import_alone_loads_neither_tensorflow_nor_keras_and_keeps_real_loaders():
    # The hook stays armed all along a TensorFlow-free process: the modules it sees must still
    # end up with their own loaders (inspect, resources and reloads read them).
    code = ("import sys, inspect, runpy, embedding_net; "
            "runpy.run_module('embedding_net.errors', run_name='as_by_python_m'); "  # runpy calls get_code
            "import embedding_net.evaluation.distances as d; "
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules)), type(d.__loader__).__name__, "
            "type(d.__spec__.loader).__name__, 'def check_distance' in inspect.getsource(d))")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "SourceFileLoader", "SourceFileLoader", "True"]


@pytest.mark.parametrize("first", [
    "import keras; import embedding_net",          # Keras loaded: registered at once
    "import embedding_net; import keras",          # the hook fires when Keras has run
    "import embedding_net; import tensorflow",     # TensorFlow loads Keras halfway through its own import
    "import embedding_net.mining",                 # the package loads Keras halfway through its own import
])
def test_a_saved_model_loads_in_safe_mode_after_import_embedding_net(saved, first):
    path, images, expected = saved
    result = _python(first + "\n" + LOAD, path, images)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(answer["embeddings"], expected, atol=1e-6)
    assert answer["hooks"] == 0, "the hook removes itself once it has fired"
    missing = sorted(set(_registering_sources()) - set(answer["modules"]))
    assert not missing, f"registration.REGISTERING_MODULES does not import {missing}"


def test_a_failing_registration_warns_instead_of_breaking_import_keras():
    code = ("import warnings, embedding_net\n"
            "embedding_net.registration.REGISTERING_MODULES += ('embedding_net.no_such_module',)\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    import keras\n"
            "print('\\n'.join(str(w.message) for w in caught if w.category is RuntimeWarning))")
    result = _python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("embedding_net could not register its Keras objects (ModuleNotFoundError")
