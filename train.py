"""Train an embedding network as a YAML config says.

    python train.py                                  # the default job: configs/omniglot.yml
    python train.py --config FILE --set train.epochs=3 --set model.embedding_size=128

Writes model.keras, encodings.npz, metrics.json, config.yml, history.csv and checkpoints/ into
<output.work_dir>/<output.name>/.
"""

import argparse
import os
import sys

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "omniglot.yml")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value; repeatable; the value is parsed as YAML")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from embedding_net.config import load_config
    from embedding_net.config.checks import check_paths
    from embedding_net.console import native_stderr_silenced, one_line_warnings
    from embedding_net.errors import UserError

    try:
        with one_line_warnings(), native_stderr_silenced():  # only imports and config checks
            config = load_config(args.config, args.overrides)
            check_paths(config)  # before the run folder is made
            from embedding_net.training import run
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


if __name__ == "__main__":
    sys.exit(main())
