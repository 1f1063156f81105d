"""Optimizers and learning-rate schedules by name, from plain arguments.

They live outside `training/` because the config validates `train.optimizer` and
`train.lr_schedule` against these registries, and nothing but `training/` may import the
training package (an import-linter contract).
"""

from embedding_net.optim.optimizers import (
    build_optimizer, get_optimizer, list_optimizers, optimizer_settings, register_optimizer)
from embedding_net.optim.multipliers import LearningRateMultipliers, backbone_multipliers
from embedding_net.optim.radam import RAdam
from embedding_net.optim.schedules import (
    build_learning_rate, get_schedule, list_schedules, plateau_callbacks, register_schedule, schedule_settings)

__all__ = ["LearningRateMultipliers", "RAdam", "backbone_multipliers", "build_learning_rate", "build_optimizer", "get_optimizer", "get_schedule",
           "list_optimizers", "list_schedules", "optimizer_settings", "plateau_callbacks",
           "register_optimizer", "register_schedule", "schedule_settings"]
