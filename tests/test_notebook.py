"""test_network.ipynb runs top to bottom on a small run, so it can never go stale, and without
TensorFlow's native start-up lines in its outputs."""

import os

import nbformat
from nbclient import NotebookClient

from helpers import tiny_overrides
from embedding_net.training import runner as training
from embedding_net.config.loading import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow's C++ side writes to file descriptor 2 when it loads on a machine without a GPU
# ("failed call to cuInit", "Could not find cuda drivers", "oneDNN custom operations", an absl notice).
NOISE = ("cuInit", "cuda drivers", "oneDNN", "absl")


def output_texts(output):
    """The readable text of a cell output: streams, errors and text/* data (not the images, whose
    base64 could spell anything)."""
    texts = [output.get("text", ""), output.get("evalue", ""), *output.get("traceback", [])]
    texts += [value for mime, value in output.get("data", {}).items() if mime.startswith("text/")]
    return [text if isinstance(text, str) else "".join(text) for text in texts]


def test_notebook_executes_on_a_small_run(omniglot_subset, tmp_path, monkeypatch):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path, "notebook") + ["train.epochs=1"])
    training.run(config)
    monkeypatch.setenv("EMBEDDING_NET_RUN", config.run_dir)
    notebook = nbformat.read(os.path.join(ROOT, "test_network.ipynb"), as_version=4)
    # The kernel as Jupyter starts it: without PYTEST_CURRENT_TEST, which stops ipykernel copying
    # what is written to file descriptor 2 into the outputs, and without the suite's
    # TF_CPP_MIN_LOG_LEVEL, so the notebook must quiet TensorFlow itself.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "TF_CPP_MIN_LOG_LEVEL")}
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute(env=env)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    noise = [line for o in outputs for text in output_texts(o) for line in text.splitlines()
             if any(word.lower() in line.lower() for word in NOISE)]
    assert noise == []
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # pairs, triplets, neighbours
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "reference images of" in text and "map_at_r" in text
    for name in ("pairs.png", "triplets.png", "neighbours.png", "tsne.html"):
        assert os.path.isfile(os.path.join(config.run_dir, "notebook", name)), name
