"""Hydra configs, shipped inside the package so installed copies find them (ECOSYSTEM §3.4)."""
