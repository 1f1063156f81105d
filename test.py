"""Classify images with a trained embedding model, enroll a labelled folder, or evaluate one:
`python test.py --help`. The same command as `embedding-net test` (embedding_net/cli/test.py)."""

import sys

from embedding_net.cli.test import main

if __name__ == "__main__":
    sys.exit(main(prog="test.py"))
