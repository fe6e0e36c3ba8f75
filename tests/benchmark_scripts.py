"""Import a script of ``benchmarks/`` by name, for the tests of those scripts (they are scripts, not a package)."""

import importlib
import sys
from types import ModuleType

from mri_synth.paths import PROJECT_ROOT


def load(name: str) -> ModuleType:
    """``load("profile_costs")`` imports ``benchmarks/profile_costs.py`` (once; later calls return the same module)
    without leaving ``benchmarks/`` on ``sys.path``."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
