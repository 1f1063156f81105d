"""Train an embedding network as a YAML config, or a folder of images, says.

`embedding-net train` and the repository's `python train.py` run this module:

    embedding-net train                                 # the default job: Omniglot, configs/omniglot.yml
    embedding-net train --data my_images                # your folder: choices made from the data
    embedding-net train --config omniglot_supcon --set train.epochs=3
    embedding-net train --data my_images --print-config # the resolved config, without training

Writes model.keras, encodings, metrics.json, config.yml, history.csv, logs/ and checkpoints/
into <output.work_dir>/<output.name>/. Everything that can be checked without TensorFlow (the
YAML, keys, types, ranges, paths, the run folder) is checked before it is imported and before
anything is written.
"""

import argparse
import os
import sys

from embedding_net.cli.configs import resolve_config_path, sections_help
from embedding_net.cli.listing import LISTS, print_list

EPILOG = """\
config sections and their keys (each documented in README.md, "Config"; --set any of them):
{sections}

--data DIR reads DIR/train/<class>/<image> (and DIR/val/<class>/<image>, else holds 20% of each
class out of train) and chooses colour, input size, P x K and backbone from the images; the
choices are printed and saved in the run's config.yml, and --set overrides them. --data omniglot
trains on the shipped Omniglot (written once to ~/.cache/embedding_net or $EMBEDDING_NET_CACHE)."""


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                     epilog=EPILOG.format(sections=sections_help()),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config: a file, or the name of a shipped one (--list configs); "
                        "default: folder with --data DIR, else omniglot")
    parser.add_argument("--data", metavar="DIR", help="your folder of images (choices made from the data), or "
                        "omniglot")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable; the value is parsed as YAML")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list", choices=sorted(LISTS), help="print the names a registry offers and exit")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up messages")
    return parser.parse_args(argv)


def _data_choices(data, seed):
    """(config name, chosen values, lines to print) for `--data`."""
    from embedding_net.config.folder_choices import choose_for_folder
    from embedding_net.data.datasets import list_datasets
    from embedding_net.errors import DatasetError

    if data is None:
        return "omniglot", {}, []
    if data in list_datasets() and os.sep not in data:
        note = ([f"note: --data {data} is the shipped dataset; for your folder {data}/ type --data ./{data}"]
                if os.path.isdir(data) else [])
        return data, {"data.root": None, "data.dataset": data}, note
    if not os.path.isdir(data):
        raise DatasetError(f"--data folder not found: {data}")
    if not os.path.isdir(os.path.join(data, "train")):
        raise DatasetError(f"--data {data} has no train/ folder: it must hold train/<class>/<image> "
                           "(and optionally val/<class>/<image>)")
    choices = choose_for_folder(data, seed)
    return "folder", choices.values, choices.lines


def _resolve(args):
    """The validated config, and the lines describing what `--data` chose (`--print-config`
    only shows it: the run folder is not checked then)."""
    from embedding_net.config import load_config
    from embedding_net.config.catalogue import catalogue_registries
    from embedding_net.config.checks import check_paths, check_run_folder

    default, chosen, lines = _data_choices(args.data, seed=0)
    with catalogue_registries():  # the registries' names without importing TensorFlow
        config = load_config(resolve_config_path(args.config or default), args.overrides, chosen)
        check_paths(config)
        if not args.print_config:
            check_run_folder(config)
    return config, lines


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from embedding_net.console import native_stderr_silenced, one_line_warnings, plain_warnings, quiet_unless
    from embedding_net.errors import UserError

    try:
        if args.list:
            with quiet_unless(args.verbose, native_stderr_silenced):
                print_list(args.list)
            return 0
        with one_line_warnings(), quiet_unless(args.verbose, native_stderr_silenced):
            config, lines = _resolve(args)
        if args.print_config:
            import yaml

            from embedding_net.config import config_to_dict
            from embedding_net.config.catalogue import catalogue_registries

            with catalogue_registries():
                print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
            return 0
        for line in lines:
            print(line, flush=True)
        with one_line_warnings(), quiet_unless(args.verbose, native_stderr_silenced):
            from embedding_net.training import run
        with plain_warnings():
            metrics = run(config)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume from the last completed epoch", file=sys.stderr)
        return 130
    print(f"outputs in {config.run_dir}")
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0
