"""The config's sections as frozen dataclasses: one field per key, its type, default and range.

A key whose value names a component (`model.backbone`, `train.optimizer`, ...) takes its
choices from that component's registry (`choices_from`), so no list of names is copied here;
`loss.name` and `loss.mining` depend on the architecture and are checked in `components`. Which other keys apply depends on the components chosen: see
`embedding_net.config.components`. The key table of the README documents every key.
"""

import os
import typing
from dataclasses import dataclass, field

from embedding_net.cache import dataset_dir



_PACKAGE = "embedding_net"


def _choice(*values):
    return {"choices": values}


def _registry(names, optional=False):
    """Choices read from a registry when the key is validated: `names` is "module:attribute",
    a `list_*` function or a tuple, imported only then, because most registries live beside
    Keras code and a config's own mistakes (a typo in a key, a wrong type) must surface before
    TensorFlow loads."""
    return {"choices_from": names, "optional": optional}


def _at_least(minimum):
    return {"min": minimum}


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field(default="conv4", metadata=_registry(f"{_PACKAGE}.models.backbones:list_backbones"))
    input_shape: typing.Tuple[int, int, int] = field(default=(28, 28, 1), metadata=_at_least(1))
    embedding_size: int = field(default=128, metadata=_at_least(1))
    weights: typing.Optional[str] = None
    pooling: str = field(default="avg", metadata=_registry(f"{_PACKAGE}.models.builders:POOLINGS"))
    invert: bool = False
    freeze: typing.Union[int, str] = "none"
    architecture: str = field(default="embedding", metadata=_registry(f"{_PACKAGE}.models.architectures:list_architectures"))
    siamese_head: str = field(default="euclidean", metadata=_choice("euclidean", "l1"))


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from: the folder `root` (a path the user names, which must exist),
    or the shipped dataset named by `dataset` (materialised in the cache, `embedding_net.cache`).
    A `root` wins over a `dataset` (the config then resolves `dataset` to null)."""

    root: typing.Optional[str] = None
    dataset: typing.Optional[str] = field(default=None, metadata=_registry(f"{_PACKAGE}.data.datasets:list_datasets", optional=True))
    train_split: str = "train"
    val_split: str = "val"
    classes_per_batch: int = field(default=32, metadata=_at_least(2))
    images_per_class: int = field(default=4, metadata=_at_least(2))
    cache: str = field(default="auto", metadata=_choice("auto", "memory", "none"))
    cache_max_gb: float = field(default=4.0, metadata=_at_least(0.0))
    rotate_classes: bool = False
    csv: typing.Optional[str] = None
    csv_path_column: str = "path"
    csv_label_column: str = "label"
    csv_split_column: typing.Optional[str] = None
    val_ratio: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    augmentation: str = field(default="none", metadata=_registry(f"{_PACKAGE}.data.presets:list_augmentations"))
    transforms: typing.Tuple[dict, ...] = ()
    batch_size: typing.Optional[int] = field(default=None, metadata=_at_least(2))

    @property
    def folder(self):
        """The folder read: `root`, or the cache folder of the shipped `dataset`."""
        return self.root if self.root is not None else dataset_dir(self.dataset)


@dataclass(frozen=True)
class LossConfig:
    """The loss and its settings; which keys apply is the chosen loss's business (its class
    documents them). A null setting (`mining`, `margin`, ...) means the loss's own default."""

    name: str = "triplet"
    mining: typing.Optional[str] = None
    margin: typing.Optional[float] = field(default=None, metadata=_at_least(0.0))
    scale: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    soft_margin: bool = False
    cross_replica: bool = False
    positive_margin: float = field(default=0.0, metadata=_at_least(0.0))
    negative_margin: float = field(default=1.0, metadata={"min": 0.0, "exclusive": True})
    distance: str = field(default="euclidean", metadata=_registry(f"{_PACKAGE}.evaluation.distances:list_distances"))
    alpha: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    beta: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    base: typing.Optional[float] = field(default=None, metadata={"min": -1.0, "max": 1.0})
    mining_epsilon: typing.Optional[float] = field(default=None, metadata=_at_least(0.0))
    temperature: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    gamma: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    sub_centers: typing.Optional[int] = field(default=None, metadata=_at_least(1))
    proxy_lr_multiplier: typing.Optional[float] = field(default=None, metadata={"min": 0.0, "exclusive": True})
    # Cross-batch memory (embedding_net.losses.memory): the last memory_size embeddings as extra
    # references, once the memory is full and memory_warmup_steps steps have run.
    memory_size: typing.Optional[int] = field(default=None, metadata=_at_least(1))
    memory_warmup_steps: int = field(default=0, metadata=_at_least(0))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=10, metadata=_at_least(1))
    steps_per_epoch: int = field(default=200, metadata=_at_least(1))
    validation_steps: int = field(default=20, metadata=_at_least(0))
    optimizer: str = field(default="adam", metadata=_registry(f"{_PACKAGE}.optim.optimizers:list_optimizers"))
    learning_rate: float = field(default=1e-3, metadata={"min": 0.0, "exclusive": True})
    backbone_lr_multiplier: float = field(default=1.0, metadata={"min": 0.0, "exclusive": True, "max": 1.0})
    layer_decay: float = field(default=1.0, metadata={"min": 0.0, "exclusive": True, "max": 1.0})
    momentum: float = field(default=0.9, metadata=_at_least(0.0))
    nesterov: bool = False
    weight_decay: float = field(default=0.004, metadata=_at_least(0.0))
    lr_schedule: str = field(default="cosine", metadata=_registry(f"{_PACKAGE}.optim.schedules:list_schedules"))
    warmup_epochs: int = field(default=0, metadata=_at_least(0))
    decay_factor: float = field(default=0.5, metadata={"min": 0.0, "exclusive": True})
    step_size: int = field(default=5, metadata=_at_least(1))
    plateau_patience: int = field(default=2, metadata=_at_least(1))
    early_stopping_patience: typing.Optional[int] = field(default=None, metadata=_at_least(1))
    restore_best: bool = True
    pretrain_epochs: int = field(default=0, metadata=_at_least(0))
    distribute: str = field(default="none", metadata=_choice("none", "mirrored", "multi_worker"))
    mixed_precision: str = field(default="none", metadata=_choice("none", "auto", "float16", "bfloat16"))
    export_litert: bool = True
    export_serving: bool = True  # saved_model/ (TF Serving) and model.onnx, beside model.keras
    seed: int = field(default=0, metadata=_at_least(0))
    verbose: int = field(default=1, metadata=_choice(0, 1, 2))


@dataclass(frozen=True)
class EncodingsConfig:
    splits: typing.Tuple[str, ...] = ("train", "val")
    max_per_class: typing.Optional[int] = field(default=None, metadata=_at_least(1))
    batch_size: int = field(default=256, metadata=_at_least(1))


@dataclass(frozen=True)
class EvaluationConfig:
    knn_k: int = field(default=5, metadata=_at_least(1))
    episodes: int = field(default=1000, metadata=_at_least(0))
    plots: bool = True
    tsne_max_points: int = field(default=2000, metadata=_at_least(10))
    tsne_max_classes: typing.Optional[int] = field(default=None, metadata=_at_least(1))


@dataclass(frozen=True)
class OutputConfig:
    work_dir: str = "work_dirs"
    name: str = "omniglot"
    tensorboard: bool = True  # <run>/logs/: scalars per epoch and the val encodings' projector


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    encodings: EncodingsConfig = EncodingsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    output: OutputConfig = OutputConfig()

    @property
    def run_dir(self):
        """The folder that receives every output of the run."""
        return os.path.join(self.output.work_dir, self.output.name)
