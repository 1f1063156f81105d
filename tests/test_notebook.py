"""test_network.ipynb runs top to bottom on a small run, so it can never go stale."""

import os

import nbformat
from nbclient import NotebookClient

from helpers import tiny_overrides
from embedding_net.training import runner as training
from embedding_net.config.loading import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_notebook_executes_on_a_small_run(omniglot_subset, tmp_path, monkeypatch):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path, "notebook") + ["train.epochs=1"])
    training.run(config)
    monkeypatch.setenv("EMBEDDING_NET_RUN", config.run_dir)
    notebook = nbformat.read(os.path.join(ROOT, "test_network.ipynb"), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # pairs, triplets, neighbours
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "reference images of" in text and "map_at_r" in text
    for name in ("pairs.png", "triplets.png", "neighbours.png", "tsne.html"):
        assert os.path.isfile(os.path.join(config.run_dir, "notebook", name)), name
