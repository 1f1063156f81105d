"""Installs the embedding_net package: `pip install -e .` (or `pip install .`)."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as handle:
        return handle.read()


def requirements():
    lines = (line.split("#")[0].strip() for line in read("requirements.txt").splitlines())
    return [line for line in lines if line]


setup(
    name="embedding_net",
    version=re.search(r'__version__ = "([^"]+)"', read("embedding_net/__init__.py")).group(1),
    description="Image embeddings with Siamese and triplet networks in Keras 3",
    long_description=read("README.md"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["embedding_net", "embedding_net.*"]),
    # The shipped configs live in the package (the repository's configs/ links to them), so
    # `embedding-net train --config omniglot_supcon` works after a plain `pip install`.
    package_data={"embedding_net.data.datasets": ["files/omniglot/*"], "embedding_net": ["configs/*.yml"],
                  "embedding_net.config": ["catalogue.json"]},
    entry_points={"console_scripts": ["embedding-net = embedding_net.cli:main"]},
    install_requires=requirements(),
    extras_require={"dev": ["pytest>=8,<10"]},
)
