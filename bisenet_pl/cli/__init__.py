"""What the commands share: Hydra glue (resolvers, the sweep summary), readable errors, environment
hygiene. Only the entry points (`bisenet_pl.train`, `.evaluate`, ...) import this package."""

from bisenet_pl.cli.common import (
    CONFIG_PATH,
    build_predictor,
    hydra_output_dir,
    instantiate_dict,
    keyword_options,
    print_error,
    quiet_environment,
    readable_errors,
    require_same_classes,
)

__all__ = [
    "CONFIG_PATH",
    "hydra_output_dir",
    "instantiate_dict",
    "build_predictor",
    "keyword_options",
    "print_error",
    "quiet_environment",
    "readable_errors",
    "require_same_classes",
]
