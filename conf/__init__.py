"""Hydra configs, shipped inside the package so installed copies find them (docs/libraries.md).

Hydra imports this package when it first reads a config: that registers the schemas read from the
Python signatures (`bisenet_pl.cli.signatures`), which the group YAMLs start from, so each default is
written once, in Python.
"""

from bisenet_pl.cli.signatures import register_signatures  # noqa: E402

register_signatures()
