"""The checks of a config against the file system, run by the scripts before TensorFlow is
imported and before the run folder is created, so that a mistyped path costs a second and
leaves nothing behind (and run again by the training layer, for library callers)."""

import os

from embedding_net.errors import ConfigError, DatasetError


def check_data_paths(data):
    """Fails with one line unless the data that `data` (a `DataConfig`) names is there.

    A shipped dataset (`data.dataset` without `data.root`) needs nothing: it is written to the
    cache on first use. A folder the user names must exist; nothing is ever created in its place."""
    if data.root is None:
        if data.dataset is None:
            raise ConfigError("data.root must name the folder of your images (train/<class>/<image>), or "
                              "data.dataset a shipped dataset such as omniglot; received neither")
        return
    if not os.path.isdir(data.root):
        raise DatasetError(f"data.root folder not found: {data.root}")
    if data.csv is not None:
        if not os.path.isfile(data.csv):
            raise DatasetError(f"data.csv file not found: {data.csv}")
        return
    train = os.path.join(data.root, data.train_split)
    if not os.path.isdir(train):
        raise DatasetError(f"data.root {data.root} has no {data.train_split}/ folder: it must hold "
                           f"{data.train_split}/<class>/<image> (and optionally {data.val_split}/<class>/<image>)")


def check_model_paths(model):
    """Fails with one line when `model.weights` names a file that is not there."""
    weights = model.weights
    if weights is not None and weights.endswith((".keras", ".weights.h5")) and not os.path.isfile(weights):
        raise ConfigError(f"model.weights file not found: {weights}")


def check_paths(config):
    """Every path of `config` that must exist before training starts."""
    check_data_paths(config.data)
    check_model_paths(config.model)


def same_run(previous, current):
    """Whether two configs (as dicts) make the same run: how verbosely it prints does not count,
    nor the precision when the new config says `auto` (config.yml records it resolved)."""
    previous, current = ({section: dict(keys) for section, keys in values.items()} for values in (previous, current))
    ignored = ["verbose"] + (["mixed_precision"] if current["train"].get("mixed_precision") == "auto" else [])
    for values in (previous, current):
        for key in ignored:
            values.get("train", {}).pop(key, None)
    return previous == current


def check_run_folder(config):
    """Refuses to train into a folder that holds a finished run (its metrics.json) of another
    config: the outputs of a run someone may be using are never overwritten without a word. A
    rerun of the same config is allowed (it resumes and rewrites the same outputs)."""
    from embedding_net.config.loading import config_to_dict, load_config

    if not os.path.isfile(os.path.join(config.run_dir, "metrics.json")):
        return
    try:
        same = same_run(config_to_dict(load_config(os.path.join(config.run_dir, "config.yml"))),
                         config_to_dict(config))
    except (ConfigError, DatasetError):
        same = False  # no readable config.yml: whatever made that run, it is not known to be this one
    if not same:
        raise ConfigError(f"{config.run_dir} holds a finished run made with another config; set output.name "
                          "to train this one beside it (or delete the folder to replace it)")
