"""Hydra configs, shipped inside the package so installed copies find them (docs/libraries.md)."""
