"""Pair and triplet generators that mine with the live model (`keras.utils.PyDataset`).

Both take decoded images (uint8 [N, H, W, C]) and integer labels, or an `ImageFolder` and its
decoded images through `from_folder`, and give fixed-size batches of uint8 images matching the
inputs of `build_siamese_model` and `build_triplet_model`.

Mining calls the embedding model the generator was given, not a copy: weights trained, or
restored from a checkpoint, into that model are the ones the next batch is mined with. Keras
prefetches a few batches, so a batch may be mined with weights a few steps old. The model is
called in the main process: `workers` and `use_multiprocessing` keep PyDataset's defaults.

Reproducibility: the random draws of batch `index` depend only on `(seed, epoch, index)`. The
attribute `epoch` starts at 0 and advances in `on_epoch_begin` of every epoch but the first the
generator serves (Keras 3 also calls `on_epoch_end` once before the first epoch, so counting those
would be off by one): to resume at epoch k, set `epoch = k` before `fit(..., initial_epoch=k)`.
What a mining rule selects depends on the model's weights as well.

An optional `augment(images) -> images` callable is applied to every image array of the output,
after mining (the model mines on the images as stored).
"""

from embedding_net.training.generators.pairs import PairGenerator, PairSelection
from embedding_net.training.generators.triplets import TripletGenerator, TripletSelection

__all__ = ["PairGenerator", "PairSelection", "TripletGenerator", "TripletSelection"]
