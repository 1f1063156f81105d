"""Registers the package's custom Keras objects as soon as both embedding_net and Keras are loaded.

A `model.keras` names its layers by their registered names ("embedding_net>ImagePreprocessing");
`keras.saving.load_model` finds them only if the modules defining them have run. Importing them
from `embedding_net/__init__.py` would import TensorFlow with every `import embedding_net`, which
the TensorFlow-free packages (`data`, `evaluation`, `inference`, `index`, `viz`) and test.py's
LiteRT path must never pay for. So:

- Keras already loaded when embedding_net is imported: the modules are imported at once.
- Otherwise an import hook (`_Hook`, first on `sys.meta_path`) waits for Keras. It also watches
  the imports that load Keras halfway through their own: TensorFlow's (`import tensorflow` loads
  Keras, then goes on), and the package's (`import embedding_net.mining` loads Keras from
  `mining.distances`, and registering then would import `embedding_net.models`, which needs that
  half-run module). The hook therefore fires only once the outermost watched import has finished,
  then removes itself; until then it only counts nested imports.

Each module it sees keeps its own loader (`module.__loader__`), and the wrapper answers everything
else from it, so source look-ups, resources, reloads and `python -m` behave as without the hook.
"""

import importlib
import sys
import threading
import warnings

# The modules holding every `@keras.saving.register_keras_serializable` of the package
# (tests/test_registration.py checks the list against the sources).
REGISTERING_MODULES = ("embedding_net.mining.monitors", "embedding_net.models", "embedding_net.losses",
                       "embedding_net.optim")

_lock = threading.Lock()
_depth = 0  # imports of Keras or of the package's modules now running, nested ones included


def register_keras_objects():
    """Imports the modules that register the package's custom objects with Keras (and so Keras)."""
    for name in REGISTERING_MODULES:
        importlib.import_module(name)


def install():
    """Registers at once if Keras is loaded, else arms the hook that registers when it is."""
    if _keras_loaded():
        register_keras_objects()
    elif not any(isinstance(finder, _Hook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Hook())


def _keras_loaded():
    return sys.modules.get("keras") is not None  # None: a process that blocks Keras on purpose


def _watched(name):
    return name in ("keras", "tensorflow") or name.startswith("embedding_net.")


class _Hook:
    """Finds nothing itself: wraps the loader another finder gives a watched module."""

    def find_spec(self, name, path=None, target=None):
        if not _watched(name):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                # A namespace package runs no code, so nothing can import Keras inside it.
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader, self)
                return spec
        return None


class _CountingLoader:
    """Runs one import through the real loader, then registers if it was the outermost watched one."""

    def __init__(self, loader, hook):
        self.loader = loader
        self.hook = hook

    def __getattr__(self, name):
        # Whoever holds the spec without importing through it (runpy's get_code for `python -m`,
        # pkgutil's is_package, resource readers) talks to the real loader.
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        global _depth
        # Put back before the module's code runs, so that code and later readers see the real one.
        module.__loader__ = module.__spec__.loader = self.loader
        with _lock:
            _depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            with _lock:
                _depth -= 1
                outermost = _depth == 0
        if outermost and _keras_loaded():
            self._fire()

    def _fire(self):
        with _lock:
            if self.hook not in sys.meta_path:
                return  # another thread fired first
            sys.meta_path.remove(self.hook)
        try:
            register_keras_objects()
        except Exception as error:  # noqa: BLE001 (a failure here must not break `import keras`)
            warnings.warn(f"embedding_net could not register its Keras objects ({type(error).__name__}: {error}); "
                          "import embedding_net.models before loading a model.keras", RuntimeWarning, stacklevel=2)
