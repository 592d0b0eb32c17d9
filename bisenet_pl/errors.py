"""The exceptions that carry a readable message to the user.

Entry points catch `BisenetError` and print only its message (no traceback), because these errors
describe bad input (a missing folder, a corrupt file, a checkpoint of another model) that the user
fixes, not a bug in the package.
"""

from __future__ import annotations


class BisenetError(Exception):
    """Base class: an input problem the user can fix; the message says which file and what to do."""


class CheckpointError(BisenetError):
    """A checkpoint that cannot be read or does not belong to this model."""


class DatasetError(BisenetError):
    """A dataset folder or file that cannot be used as given."""


class ConfigError(BisenetError):
    """A configuration that cannot work (e.g. an unsafe launcher/strategy combination)."""


class TrainingDiverged(BisenetError):
    """The loss became NaN or infinite: the run stops at that step and keeps its last finite checkpoint."""
