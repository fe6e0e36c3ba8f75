"""One strict way from a notebook's parameters to a checked configuration.

Every notebook's settings class derives from :class:`NotebookConfig`, which holds what they all share (data
source, seed, device, CPU threads, output folders) and checks every field against its type on construction, with
a message that names the parameter and how to fix it. A notebook's config cell is one call::

    config = GenerationConfig.from_params(globals())

which takes the config's fields from the notebook's namespace (the ``parameters`` cell and what papermill
injected) and nothing else. The notebook batch refuses profile keys that no notebook declares
(:mod:`mri_synth.notebooks`), and a test checks that each notebook declares only its config's fields, so a
parameter is never typed twice nor silently dropped. What each config means is its own module's business.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

from mri_synth import paths
from mri_synth.data.cache import load_data
from mri_synth.data.types import MRIData

C = TypeVar("C", bound="NotebookConfig")


def _check(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` names (lists become tuples, ints become floats), or a ValueError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(o for o in options if o is not type(None))
        origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, e.g. [1.0, 0.3]; got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_check(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and (isinstance(value, bool) or not isinstance(value, hint)):
        raise ValueError(f"{name} must be {'an int' if hint is int else 'a number'}, got {value!r} "
                         f"({type(value).__name__}); fix the notebook's parameters cell or the profile")
    if hint in (str, bool) and not isinstance(value, hint):
        raise ValueError(f"{name} must be a {hint.__name__}, got {value!r} ({type(value).__name__}); "
                         "fix the notebook's parameters cell or the profile")
    return value


@dataclass(frozen=True)
class NotebookConfig:
    """What every notebook's settings share; subclasses add their own fields (each with a why-comment)."""

    data_source: str = "sample"  # "sample" (bundled), a hub id or a folder; empty: MRI_SYNTH_DATA or the hub
    seed: int = 0  # seeds every draw of the notebook
    device: str = "auto"  # cuda when present, else cpu
    cpu_threads: int = 0  # torch CPU threads; 0 keeps torch's default, 1 is fastest on a shared CPU
    figures_dir: str = ""  # where figures go; empty: runs/figures (relative paths start at the project root)
    results_dir: str = ""  # where tables go; empty: results/ (relative paths start at the project root)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if f.init:
                object.__setattr__(self, f.name, _check(f.name, getattr(self, f.name), hints[f.name]))
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0 keeps torch's default), got {self.cpu_threads}")

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The names a notebook of this config may declare in its ``parameters`` cell."""
        return tuple(f.name for f in fields(cls) if f.init)

    @classmethod
    def from_params(cls: type[C], namespace: Mapping[str, Any]) -> C:
        """The config from a notebook's namespace (``globals()``): its fields found there, defaults for the rest."""
        return cls(**{name: namespace[name] for name in cls.parameter_names() if name in namespace})

    @property
    def figures(self) -> Path:
        """The figures folder (made if missing)."""
        return paths.chosen_dir(self.figures_dir, paths.figures_dir)

    @property
    def results(self) -> Path:
        """The results folder (made if missing)."""
        return paths.chosen_dir(self.results_dir, paths.results_dir)

    def load_data(self) -> MRIData:
        """The notebook's data source, decoded once (``data.load_data``)."""
        return load_data(self.data_source)
