"""Per-variable learning-rate multipliers: a smaller learning rate for a pretrained backbone than
for the new head, and optionally layer-wise decay down a transformer (Clark et al. 2020, ELECTRA;
Bao et al. 2022, BEiT), for any Keras 3 optimizer.

    from embedding_net.models.hub import transformer_blocks
    tower = model.get_layer("dinov2_small")  # the backbone inside the embedding model
    optimizer = LearningRateMultipliers(keras.optimizers.AdamW(1e-4), backbone_multipliers(
        tower, multiplier=0.1, blocks=transformer_blocks(tower), layer_decay=0.75))

Keras 3 has one learning rate per optimizer. Scaling the gradients of the backbone instead would
be exact for SGD only: Adam, AdamW, RMSprop and RAdam divide by the gradient's own running
scale, so a scaled gradient gives the same step. The wrapper therefore passes
`learning_rate * multiplier` to the wrapped optimizer's own `update_step`, variable by variable:
one step equals the wrapped optimizer's step with that learning rate, whatever its rule.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="embedding_net")
class LearningRateMultipliers(keras.optimizers.Optimizer):
    """Wraps `optimizer` so that each variable steps with `learning_rate * multipliers[path]`.

    The learning rate (a float or a schedule, settable by reduce-on-plateau), clipping, EMA,
    gradient accumulation and loss scaling are the wrapped optimizer's settings, taken over at
    construction; its slots (moments) are its own. Decoupled weight decay (AdamW) is scaled
    by the multiplier too, as it is by the learning rate. Variables whose `path` is not a key
    of `multipliers` use 1.0. Stateful backends (TensorFlow, torch); `global_clipnorm` is the
    norm of all gradients, before the multipliers.

    Args:
        optimizer: a `keras.optimizers.Optimizer` (not yet built).
        multipliers: {variable path: multiplier > 0}, e.g. from `backbone_multipliers`. Paths
            (`variable.path`) are strings, so the optimizer serialises with the model.
        name: the optimizer's name.
    """

    def __init__(self, optimizer, multipliers=None, name="learning_rate_multipliers"):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"`optimizer` must be a keras.optimizers.Optimizer. Received: {optimizer!r}")
        multipliers = dict(multipliers or {})
        for path, value in multipliers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"each multiplier must be a number > 0. Received: {path!r}: {value!r}")
        rate = optimizer._learning_rate
        if isinstance(rate, keras.Variable):
            rate = float(ops.convert_to_numpy(rate))
        super().__init__(
            learning_rate=rate, weight_decay=optimizer.weight_decay, clipnorm=optimizer.clipnorm,
            clipvalue=optimizer.clipvalue, global_clipnorm=optimizer.global_clipnorm,
            use_ema=optimizer.use_ema, ema_momentum=optimizer.ema_momentum,
            ema_overwrite_frequency=optimizer.ema_overwrite_frequency,
            loss_scale_factor=optimizer.loss_scale_factor,
            gradient_accumulation_steps=optimizer.gradient_accumulation_steps, name=name)
        self.optimizer = optimizer
        self.multipliers = {str(path): float(value) for path, value in multipliers.items()}
        self._factors = []

    def build(self, variables):
        """Builds the wrapped optimizer on the same variables (same indices, its own slots)."""
        if self.built:
            return
        self.optimizer.build(variables)
        super().build(variables)
        self._factors = [self.multipliers.get(variable.path, 1.0) for variable in variables]

    @property
    def variables(self):
        return self._variables + self.optimizer.variables

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = ops.multiply(learning_rate, factor)
        if self.weight_decay is not None and self.optimizer._use_weight_decay(variable):
            # Decoupled decay, here rather than in `_apply_weight_decay` (disabled below) to
            # scale it per variable; update_step runs where the backend's distributed update
            # allows assignments, and a variable's decay still precedes its own step.
            decay = ops.cast(self.weight_decay, variable.dtype) * ops.cast(learning_rate, variable.dtype)
            self.assign_sub(variable, variable * decay)
        self.optimizer.update_step(gradient, variable, learning_rate)

    def apply(self, grads, trainable_variables=None):
        super().apply(grads, trainable_variables)
        # The wrapped rule reads its own step counter (Adam's bias correction): keep it equal.
        self.optimizer.iterations.assign(self.iterations)

    def _apply_weight_decay(self, variables):
        """Weight decay is applied in `update_step`, scaled by each variable's multiplier."""

    def get_config(self):
        return {"name": self.name, "optimizer": keras.optimizers.serialize(self.optimizer),
                "multipliers": dict(self.multipliers)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.optimizers.deserialize(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(optimizer, **config)


def backbone_multipliers(backbone, multiplier=1.0, blocks=(), layer_decay=1.0):
    """{variable path: multiplier} for every variable of `backbone` (a Keras layer or model):
    `multiplier * layer_decay ** depth`, where `depth` counts from the top of `blocks`.

    Args:
        backbone: the pretrained part of the model; the rest (the head) keeps the full rate.
        multiplier: the backbone's learning rate over the head's, in (0, 1].
        blocks: the backbone's units from the input up (e.g. `embedding_net.models.hub.
            transformer_blocks(tower)`: patch embedding, block 0, ..., block L-1). The last
            block has depth 1, the first unit depth len(blocks); variables in no block (the
            final normalisation, a pooling head) have depth 0, as in BEiT's recipe.
        layer_decay: the factor per block of depth, in (0, 1]; 1.0 turns it off.

    Returns:
        A dict for `LearningRateMultipliers`, without the variables whose multiplier is 1.
    """
    for key, value in (("multiplier", multiplier), ("layer_decay", layer_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"`{key}` must be in (0, 1]. Received: {value!r}")
    if layer_decay != 1.0 and not blocks:
        raise ValueError(f"`layer_decay` needs the backbone's `blocks`. Received: layer_decay={layer_decay!r}, "
                         f"blocks={blocks!r}")
    depths = {}
    for index, block in enumerate(blocks):
        for variable in block.weights:
            depths[variable.path] = len(blocks) - index
    multipliers = {}
    for variable in backbone.weights:
        value = float(multiplier * layer_decay ** depths.get(variable.path, 0))
        if variable.path in multipliers and multipliers[variable.path] != value:
            raise ValueError(f"two variables of {backbone.name!r} share the path {variable.path!r}")
        if value != 1.0:
            multipliers[variable.path] = value
    return multipliers
