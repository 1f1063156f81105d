"""What a training run fits, as the config says: the model of `model.architecture` (the
embedding model itself, ArcFace, Siamese or triplet), its loss and metrics, its training and
validation data, and the optimizer with its schedule. Part of the training layer."""

import typing

import keras

from embedding_net.losses.arcface import arcface_batches
from embedding_net.losses.memory import CrossBatchMemory, MemoryModel
from embedding_net.losses.proxies import ClassCentres, build_proxy_model
from embedding_net.data.augmentation import BatchAugmenter, augment_dataset
from embedding_net.errors import ConfigError
from embedding_net.training.generators.pairs import PairGenerator
from embedding_net.training.generators.triplets import TripletGenerator
from embedding_net.losses.registry import get_loss, loss_info, loss_settings
from embedding_net.losses.triplet import TripletLoss
from embedding_net.models.architectures import get_architecture
from embedding_net.registry import constructor_arguments
from embedding_net.mining.monitors import collapse_monitors
from embedding_net.optim.schedules import build_learning_rate, plateau_callbacks
from embedding_net.models.hub import transformer_blocks
from embedding_net.optim import build_optimizer
from embedding_net.optim.multipliers import LearningRateMultipliers, backbone_multipliers
from embedding_net.optim.optimizers import optimizer_settings
from embedding_net.optim.schedules import get_schedule, reduces_on_plateau, schedule_settings
from embedding_net.training.data import batches, build_augmentation_from


def loss_arguments(loss, architecture="embedding"):
    """The constructor arguments of the loss `loss.name` of `architecture`: its settings in the
    `loss` section that its class takes (a generator reads `mining`), null ones left out so
    that the class's own default applies."""
    accepted = constructor_arguments(get_loss(loss.name, architecture))
    return {key: getattr(loss, key) for key in loss_settings(loss.name, architecture)
            if key in accepted and getattr(loss, key) is not None}


def build_loss(loss, architecture="embedding", **arguments):
    """The loss of `loss.name` for `architecture`, from its settings in the config (and
    `arguments`, e.g. the number of classes of a layer of class centres)."""
    return get_loss(loss.name, architecture)(**arguments, **loss_arguments(loss, architecture))


def _unchanged(dataset):
    return dataset


def _memory_model(config, model, loss):
    """The tower with a cross-batch memory of `loss.memory_size` (`losses.memory`)."""
    size, batch = config.loss.memory_size, config.data.classes_per_batch * config.data.images_per_class
    if size < batch:
        raise ConfigError(f"loss.memory_size must hold at least one batch ({batch} = data.classes_per_batch x "
                          f"data.images_per_class), received: {size}")
    memory = CrossBatchMemory(size, warmup_steps=config.loss.memory_warmup_steps, name="cross_batch_memory")
    return MemoryModel(model, memory, loss, name=f"{model.name}_with_memory")


class TrainingSetup(typing.NamedTuple):
    """What `model.architecture` trains: the model fitted (sharing the embedding tower), its
    loss and metrics, and the training and validation data (tf.data or a mining generator)."""

    model: object
    loss: object
    metrics: list
    train_data: object
    val_data: object

    def selection(self, planned, validation_steps):
        """What chooses the checkpoint: `planned` (from `selection_split`), unless validation was
        asked for and this setup has no batches for it (a proxy loss cannot score classes without
        a centre, such as Omniglot's new characters): then the lowest training loss chooses."""
        return "train_loss" if self.val_data is None and validation_steps else planned


def build_training_setup(config, model, training_set, validation_set, start_batch=0):
    """The training model, loss, metrics and data of `model.architecture` and `loss.name`.

    Augmentation applies to the training data only. `start_batch` restarts the tf.data
    pipelines at the batch an interrupted run reached; generators are told the epoch instead.
    """
    data, loss, seed = config.data, config.loss, config.train.seed
    (train_folder, train_images), (val_folder, val_images) = training_set, validation_set
    augmentation = build_augmentation_from(data, seed)
    architecture = config.model.architecture
    if architecture == "embedding":
        train_data = augment_dataset(batches(config, train_folder, train_images, seed, start_batch=start_batch),
                                     augmentation, seed, start_batch)
        val_data = None
        if val_folder is not None and len(val_folder.class_names) >= 2:
            val_data = batches(config, val_folder, val_images, seed + 1,
                               min(data.classes_per_batch, len(val_folder.class_names)))
        head_kind = loss_info(loss.name).get("head")
        if head_kind is None:
            built = build_loss(loss)
            # The active-triplet monitor measures at the loss's margin where it is a triplet
            # margin, and at the triplet loss's default otherwise.
            margin = built.margin if isinstance(built, TripletLoss) else TripletLoss().margin
            training_model = model if loss.memory_size is None else _memory_model(config, model, built)
            return TrainingSetup(training_model, built, collapse_monitors(margin, loss.distance), train_data, val_data)
        names = train_folder.class_names
        labelled = arcface_batches if head_kind == "logits" else _unchanged
        if val_data is not None and set(val_folder.class_names) <= set(names):
            # Validation loss needs the val images labelled with the training classes' centres.
            val_data = labelled(batches(config, val_folder, val_images, seed + 1,
                                        min(data.classes_per_batch, len(val_folder.class_names)),
                                        class_names=names))
        else:
            val_data = None  # new classes (e.g. Omniglot's evaluation characters) have no centre
        if head_kind == "logits":  # ArcFace, CosFace: the layer is the registered loss
            head = build_loss(loss, num_classes=len(names), name=loss.name)
            training_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        else:  # Proxy Anchor: a loss on the cosines to the centres
            head = ClassCentres(len(names), name=loss.name)
            training_loss, metrics = build_loss(loss), []
        return TrainingSetup(build_proxy_model(model, head, name=f"{loss.name}_model"), training_loss, metrics,
                             labelled(train_data), val_data)

    if train_images is None:
        raise ConfigError(f"model.architecture {architecture} mines with the live model and needs the "
                          "images in memory: set data.cache: memory")
    batch_size = data.batch_size or data.classes_per_batch * data.images_per_class
    augment = None if augmentation is None else BatchAugmenter(augmentation, seed)

    mining = {} if loss.mining is None else {"mining": loss.mining}

    def generator(folder, images, generator_seed, augment=None):
        eligible = int((folder.class_counts() >= 2).sum())
        common = dict(batch_size=batch_size, steps_per_epoch=config.train.steps_per_epoch,
                      classes_per_batch=min(data.classes_per_batch, eligible),
                      images_per_class=data.images_per_class, distance=loss.distance, seed=generator_seed,
                      augment=augment, embedding_model=model, **mining)
        if architecture == "siamese":
            return PairGenerator.from_folder(folder, images, **common)
        margin = {} if loss.margin is None else {"margin": loss.margin}
        return TripletGenerator.from_folder(folder, images, **margin, **common)

    train_data = generator(train_folder, train_images, seed, augment)
    val_data = None
    if val_folder is not None and val_images is not None and (val_folder.class_counts() >= 2).sum() >= 2:
        val_data = generator(val_folder, val_images, seed + 1)
    if architecture == "siamese":
        siamese = get_architecture(architecture)(model, config.model.siamese_head)
        # The l1 head outputs a probability: its accuracy is a meaningful training figure.
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")] if config.model.siamese_head == "l1" else []
        return TrainingSetup(siamese, build_loss(loss, architecture), metrics, train_data, val_data)
    return TrainingSetup(get_architecture(architecture)(model), build_loss(loss, architecture), [],
                         train_data, val_data)


def optimizer_from_config(train):
    """The optimizer of `train.optimizer`, with the `train.lr_schedule` learning rate."""
    # The config counts warm-up and step size in epochs; the schedules count optimizer steps.
    in_steps = {"warmup_epochs": "warmup_steps", "step_size": "step_size"}
    accepted = constructor_arguments(get_schedule(train.lr_schedule))
    arguments = {}
    for key in schedule_settings(train.lr_schedule):
        value = getattr(train, key)
        name = in_steps.get(key, key)
        if name in accepted:
            arguments[name] = value * train.steps_per_epoch if key in in_steps else value
    learning_rate = build_learning_rate(train.learning_rate, train.lr_schedule,
                                        total_steps=train.epochs * train.steps_per_epoch, **arguments)
    return build_optimizer(train.optimizer, learning_rate,
                                   **{key: getattr(train, key) for key in optimizer_settings(train.optimizer)})


def schedule_callbacks(train, monitor):
    """Reduce-on-plateau and early stopping (restoring the best weights), when configured."""
    return plateau_callbacks(monitor, train.plateau_patience if reduces_on_plateau(train.lr_schedule) else None,
                             train.decay_factor, train.early_stopping_patience)


def run_optimizer(config, model, training_model=None):
    """The optimizer of `train`, the backbone's variables (of the embedding `model`) at
    `train.backbone_lr_multiplier` times the learning rate, each transformer block further at
    `train.layer_decay` ** (its depth from the top), and the class centres of a proxy loss (in
    `training_model`) at `loss.proxy_lr_multiplier` times it (null: the loss's own default)."""
    optimizer, train, loss = optimizer_from_config(config.train), config.train, config.loss
    multipliers = {}
    info = loss_info(loss.name) if config.model.architecture == "embedding" else {}
    proxy_multiplier = loss.proxy_lr_multiplier if loss.proxy_lr_multiplier is not None else info.get("proxy_lr_multiplier", 1.0)
    if "head" in info and proxy_multiplier != 1.0 and training_model is not None:
        head = training_model.get_layer(loss.name)  # the centres layer is named after its loss
        multipliers.update({variable.path: proxy_multiplier for variable in head.trainable_variables})
    if train.backbone_lr_multiplier != 1.0 or train.layer_decay != 1.0:
        tower = model.get_layer(config.model.backbone)  # every tower is named after its backbone
        blocks = transformer_blocks(tower) if train.layer_decay != 1.0 else ()
        multipliers.update(backbone_multipliers(
            tower, multiplier=train.backbone_lr_multiplier, blocks=blocks, layer_decay=train.layer_decay))
    return LearningRateMultipliers(optimizer, multipliers) if multipliers else optimizer
