"""The top-level conftest's plain helpers (`cli_env`, `randomize_bn`, ...) for tests in sub-folders.

`from conftest import ...` is ambiguous once a sub-folder (tests/parity) has a conftest of its own, so
tests import the helpers from here: the top-level conftest loaded by its path under a unique name.
"""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_bisenet_tests_conftest", Path(__file__).with_name("conftest.py")
)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module
_spec.loader.exec_module(_module)

TINY = _module.TINY
cli_env = _module.cli_env
int8_export = _module.int8_export
tiny_train_args = _module.tiny_train_args
wait_for = _module.wait_for
bare_trainer = _module.bare_trainer
randomize_bn = _module.randomize_bn
