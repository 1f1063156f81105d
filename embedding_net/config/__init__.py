"""The experiment config: sections as frozen dataclasses, YAML with `--set` overrides, and the
rule that each chosen component (loss, optimizer, schedule, architecture) owns its settings.

Only `embedding_net.training` (and the scripts) import this package: library classes take
plain arguments (an import-linter contract in setup.cfg).
"""

from embedding_net.config.components import ConfigWarning
from embedding_net.config.loading import config_from_dict, config_to_dict, load_config, parse_override, save_config
from embedding_net.config.sections import (
    Config, DataConfig, EncodingsConfig, EvaluationConfig, LossConfig, ModelConfig, OutputConfig, TrainConfig)

__all__ = ["Config", "ConfigWarning", "DataConfig", "EncodingsConfig", "EvaluationConfig", "LossConfig",
           "ModelConfig", "OutputConfig", "TrainConfig", "config_from_dict", "config_to_dict", "load_config",
           "parse_override", "save_config"]
