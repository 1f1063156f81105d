"""The commands, for a clone and for a `pip install` alike:

    embedding-net train [--data DIR | --config FILE] [--set section.key=value ...]
    embedding-net test --weights RUN/model.keras --encodings RUN/encodings.enidx --image IMG

`embedding-net` is the package's console entry point (setup.py); the repository's train.py and
test.py call the same `main` functions. Nothing heavy is imported here: `test` must start
without TensorFlow, and `train` checks its config before importing it.
"""

import importlib
import sys

from embedding_net import __version__

COMMANDS = {
    "train": ("embedding_net.cli.train", "train an embedding network as a YAML config (or a data folder) says"),
    "test": ("embedding_net.cli.test", "classify images, enroll a labelled folder, or evaluate one"),
}


def usage():
    lines = [f"usage: embedding-net {{{','.join(COMMANDS)}}} ...  (embedding_net {__version__})", "", "commands:"]
    lines += [f"  {name:<6} {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "embedding-net COMMAND --help shows the command's options."]
    return "\n".join(lines)


def main(argv=None):
    """`embedding-net COMMAND ...`; returns the exit status (2 for a usage mistake)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:], prog=f"embedding-net {argv[0]}")
