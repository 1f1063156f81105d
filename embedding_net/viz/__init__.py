"""Pictures (no TensorFlow): t-SNE maps (PNG, interactive HTML), training curves, image
galleries (neighbours, batches, pairs, triplets) and the tables and pictures a run writes.
matplotlib, plotly and scikit-learn load inside the functions that draw."""

from embedding_net.viz.curves import plot_training_curves
from embedding_net.viz.galleries import (
    nearest_neighbours, plot_batch, plot_neighbour_gallery, plot_pairs, plot_triplets)
from embedding_net.viz.maps import plot_tsne, plot_tsne_interactive, tsne_2d
from embedding_net.viz.reports import plot_gallery, plot_tsne_pair, tsne_subsample, write_class_tables

__all__ = ["nearest_neighbours", "plot_batch", "plot_gallery", "plot_neighbour_gallery", "plot_pairs",
           "plot_training_curves", "plot_triplets", "plot_tsne", "plot_tsne_interactive", "plot_tsne_pair",
           "tsne_2d", "tsne_subsample", "write_class_tables"]
