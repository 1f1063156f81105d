"""Train an embedding network as a YAML config, or a folder of images, says:
`python train.py --help`. The same command as `embedding-net train` (embedding_net/cli/train.py)."""

import sys

from embedding_net.cli.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train.py"))
