"""The generator registry: one line per generator, and the one way every caller gets synthetic images.

Every list of generators in the project (the study's arms, the notebooks' choices, the command line's) is read from
:data:`GENERATORS`, so adding a generator is one module plus one :func:`register` call. An entry says

- how a user's :class:`GeneratorSettings` become the *label* a trial records (:attr:`GeneratorEntry.label`: what
  decides the images, e.g. a diffusion preset or an OpenAI model and quality; never a key or secret);
- how to build the generator from that label (:attr:`GeneratorEntry.build`), trained on the images it is given
  when it learns from data (:attr:`GeneratorEntry.learns_from_subset`);
- whether it costs money (:attr:`GeneratorEntry.paid`): a paid generator fills the bank only through notebook 02
  or ``mri-synth generate`` with a budget; a trial or a figure only reads what is there.

:func:`fill_and_sample` is the one path from a built generator to images: fill the bank (free generators only),
then draw from it. The study, notebook 02 and notebook 03 all call it with the same device and thread settings.
What each generator does is its own module's business; storage is the bank's.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

import torch

from mri_synth import paths
from mri_synth.data.types import Split
from mri_synth.synth.bank import SyntheticBank
from mri_synth.synth.base import Generator
from mri_synth.synth.folder import FolderGenerator
from mri_synth.synth.openai_gen import DEFAULT_MODEL, OpenAIGenerator
from mri_synth.synth.reconstruction import ReconstructionGenerator

DEFAULT_DIFFUSION_PRESET = "latent-cpu"
"""The diffusion preset every entry point uses unless told otherwise (the study and the command line): the latent
CPU preset, the first to pass issue 12's fidelity checks (``benchmarks/results/latent_fidelity.md``; about 18 CPU
minutes per 30% subset). The notebooks and every profile name theirs: the quick profile keeps the toy and pixel
quick presets (seconds), so ``make study``, ``make test`` and CI never train this one."""


@dataclass(frozen=True)
class GeneratorSettings:
    """What a user chooses about generators; each generator reads the fields it needs.

    Content settings (presets, models, folders) become a trial's label; the rest (device, threads, where trained
    generators are cached, progress bars) only say how to run and never change the images' key.
    """

    diffusion_preset: str = DEFAULT_DIFFUSION_PRESET  # toy, quick, gpu (pixel) or latent-toy, latent-cpu, latent-gpu
    diffusion_overrides: tuple[tuple[str, Any], ...] = ()  # DiffusionConfig fields over the preset's
    pixel_preset: str = "quick"  # the pixel_diffusion arm's pixel-space preset (toy, small, quick, gpu)
    openai_model: str = ""  # empty: the OpenAI generator's default model
    openai_quality: str = "low"  # results are shrunk to 128 px, so low is enough
    synthetic_folder: str = ""  # the folder arm: one sub-folder per class
    device: str = "auto"  # where a learned generator trains and samples
    cpu_threads: int = 0  # torch CPU threads while it does (0: torch's default)
    generator_root: str = ""  # trained generators; empty: <cache>/diffusion
    progress: bool = False

    def with_label(self, name: str, label: str) -> "GeneratorSettings":
        """These settings with the content of ``label`` (as written by ``name``'s entry) put back."""
        return get(name).parse(self, label)


DRAWS_FROM = ("subset", "rest")
"""Whose images a generator varies: the trial's own real subset, or the rest of its evaluation's training pool."""


@dataclass(frozen=True)
class GeneratorEntry:
    """One generator of the registry.

    Attributes:
        name: The arm name (``diffusion``, ``openai``, ``folder``).
        label: Settings -> the text a trial records as its ``generator``: everything that changes the images.
        parse: (settings, label) -> settings carrying that label's content (the inverse of ``label``).
        build: (settings, images it may learn from or None, seed) -> a ``Generator``.
        learns_from_subset: It trains on the trial's own real subset (and needs it to build).
        paid: It costs money per image: trials never fill the bank with it.
        about: One line for help texts and tables.
        draws_from: Which real images it makes its images of: ``subset`` (the trial's own, the study's rule) or
            ``rest`` (the evaluation's training pool outside the subset: the reconstruction diagnostic only).
        diagnostic: A measurement arm, not an augmentation method (the tables say so).
    """

    name: str
    label: Callable[[GeneratorSettings], str]
    build: Callable[[GeneratorSettings, "Split | None", int], "Generator"]
    parse: Callable[[GeneratorSettings, str], GeneratorSettings] = field(default=lambda settings, label: settings)
    learns_from_subset: bool = False
    paid: bool = False
    about: str = ""
    draws_from: str = "subset"
    diagnostic: bool = False

    def __post_init__(self) -> None:
        if self.draws_from not in DRAWS_FROM:
            raise ValueError(f"draws_from must be one of {DRAWS_FROM}, got {self.draws_from!r}")

    @property
    def kind(self) -> str:
        """How the study's tables describe the arm's images."""
        if self.diagnostic:
            return "diagnostic: the subset's autoencoder"
        return "learned on the trial's subset" if self.learns_from_subset else "external"


GENERATORS: dict[str, GeneratorEntry] = {}
"""name -> entry, in registration order."""


def register(entry: GeneratorEntry) -> GeneratorEntry:
    """Add a generator (or replace one of the same name); returns the entry."""
    if not entry.name.isidentifier():
        raise ValueError(f"a generator name must be an identifier (it is an arm name), got {entry.name!r}")
    if entry.name in ("none", "repeat"):
        raise ValueError(f"{entry.name!r} is an arm of the study, not a generator name; choose another")
    GENERATORS[entry.name] = entry
    return entry


@contextmanager
def registered(entry: GeneratorEntry) -> Iterator[GeneratorEntry]:
    """Register ``entry`` for the duration of a ``with`` block (tests, one-off studies)."""
    before = GENERATORS.get(entry.name)
    register(entry)
    try:
        yield entry
    finally:
        if before is None:
            GENERATORS.pop(entry.name, None)
        else:
            GENERATORS[entry.name] = before


def names() -> tuple[str, ...]:
    """The registered generator names, in registration order."""
    return tuple(GENERATORS)


def get(name: str) -> GeneratorEntry:
    """The entry called ``name``, or an error listing the registered ones."""
    try:
        return GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}: choose one of {', '.join(GENERATORS)} (or register one in "
                         "mri_synth.synth.registry)") from None


def build(name: str, settings: GeneratorSettings, train_on: "Split | None" = None, seed: int = 0) -> "Generator":
    """Build generator ``name`` from ``settings``; a learned one is trained on ``train_on`` only (cached)."""
    entry = get(name)
    if entry.learns_from_subset and train_on is None:
        raise ValueError(f"the {name} generator learns from real images: pass train_on= (the trial's own subset)")
    return entry.build(settings, train_on, seed)


def fill_and_sample(generator: "Generator", bank: "SyntheticBank", sources: "Split", n: int, *, seed: int,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[str, ...]]:
    """``n`` variations of ``sources`` from ``generator``, through ``bank``.

    A free generator first fills the bank with enough variants of each source (``ceil(n / len(sources))``; the
    bank keeps what it made, so nothing is made twice); a paid one is only read: its images must already be there
    (notebook 02 or ``mri-synth generate``). Returns the bank's ``(images, labels, synthetic ids, source ids)``.
    """
    per_source = math.ceil(n / len(sources)) if n else 0
    held = bank.available(sources.ids, generator.fingerprint) if per_source else {}
    # a bank that already holds enough is only read: no fill, so no lock that a concurrent trial could hold
    if per_source and generator.estimate_cost_usd(1) == 0 and any(len(held.get(s, ())) < per_source
                                                                   for s in sources.ids):
        bank.fill(generator, sources.images, sources.labels, sources.ids, per_source, seed=seed, progress=progress)
    images, labels, ids, source_ids = bank.sample(sources.ids, n, seed=seed,
                                                  generator_fingerprint=generator.fingerprint)
    if not set(source_ids) <= set(sources.ids):
        raise RuntimeError("the bank returned a variation of an image outside the given sources")
    return images, labels, ids, source_ids


# ------------------------------------------------------------------------------------------- the generators


def _device(settings: GeneratorSettings) -> str | None:
    return None if settings.device == "auto" else settings.device


LATENT_PREFIX = "latent-"
"""Diffusion presets named ``latent-<preset>`` are the latent diffusion generator's (``synth.latent``): an
autoencoder and a latent UNet; the others (toy, quick, gpu) are the pixel-space generator's (``synth.diffusion``)."""


def _diffusion_kind(preset: str):
    """``(config class, generator class, the preset's own name)`` of a diffusion preset."""
    if preset.startswith(LATENT_PREFIX):
        from mri_synth.synth.latent import LatentDiffusionConfig, LatentDiffusionGenerator  # lazy: diffusers

        return LatentDiffusionConfig, LatentDiffusionGenerator, preset[len(LATENT_PREFIX):]
    from mri_synth.synth.diffusion import DiffusionConfig, DiffusionGenerator  # lazy: diffusers is slow to import

    return DiffusionConfig, DiffusionGenerator, preset


def diffusion_presets() -> tuple[str, ...]:
    """Every diffusion preset name: the pixel-space ones, then the latent ones."""
    from mri_synth.synth.diffusion import PRESETS  # lazy: diffusers
    from mri_synth.synth.latent import PRESETS as LATENT  # lazy: diffusers

    return (*PRESETS, *(LATENT_PREFIX + p for p in LATENT))


def _diffusion_config(settings: GeneratorSettings):
    config_class, _, preset = _diffusion_kind(settings.diffusion_preset)
    try:
        return config_class.preset(preset, **dict(settings.diffusion_overrides))
    except ValueError as error:
        raise ValueError(f"{error} (diffusion presets: {', '.join(diffusion_presets())})") from None


def _diffusion_label(settings: GeneratorSettings) -> str:
    _diffusion_config(settings)  # an unknown preset or a bad override fails here, with the config's message
    overrides = ",".join(f"{k}={v}" for k, v in sorted(settings.diffusion_overrides))
    return settings.diffusion_preset + (f":{overrides}" if overrides else "")


def _diffusion_parse(settings: GeneratorSettings, label: str) -> GeneratorSettings:
    preset, _, text = label.partition(":")
    config_class = _diffusion_kind(preset)[0]
    overrides = []
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        kind = type(getattr(config_class(), key, None))
        overrides.append((key, kind(value) if kind in (int, float) else value == "True" if kind is bool else value))
    return replace(settings, diffusion_preset=preset, diffusion_overrides=tuple(overrides))


def _diffusion_build(settings: GeneratorSettings, train_on: "Split | None", seed: int) -> "Generator":
    generator_class = _diffusion_kind(settings.diffusion_preset)[1]
    root = settings.generator_root or paths.cache_dir() / "diffusion"
    return generator_class.cached(_diffusion_config(settings), train_on.images, train_on.labels, train_on.ids,
                                     seed=seed, cache_root=root, device=_device(settings),
                                     cpu_threads=settings.cpu_threads or None, progress=settings.progress)


def _reconstruction_build(settings: GeneratorSettings, train_on: "Split | None", seed: int) -> "Generator":
    if not settings.diffusion_preset.startswith(LATENT_PREFIX):
        raise ValueError(f"the reconstruction arms send images through a latent generator's autoencoder, and the "
                         f"diffusion preset {settings.diffusion_preset!r} has none: choose a latent-* preset "
                         f"({', '.join(p for p in diffusion_presets() if p.startswith(LATENT_PREFIX))})")
    return ReconstructionGenerator(_diffusion_build(settings, train_on, seed))


def _openai_generator(settings: GeneratorSettings):
    return OpenAIGenerator(settings.openai_model or DEFAULT_MODEL, quality=settings.openai_quality)


def _openai_label(settings: GeneratorSettings) -> str:
    return f"{settings.openai_model or DEFAULT_MODEL}:{settings.openai_quality}"


def _openai_parse(settings: GeneratorSettings, label: str) -> GeneratorSettings:
    model, _, quality = label.rpartition(":")
    return replace(settings, openai_model=model, openai_quality=quality)


def _folder_label(settings: GeneratorSettings) -> str:
    if not settings.synthetic_folder:
        raise ValueError("the folder arm needs synthetic_folder (--synthetic-folder): a folder with one sub-folder "
                         "per class holding the images made elsewhere")
    return str(paths.project_path(settings.synthetic_folder))


def _folder_build(settings: GeneratorSettings, train_on: "Split | None", seed: int) -> "Generator":
    return FolderGenerator(_folder_label(settings))


register(GeneratorEntry(
    "diffusion", _diffusion_label, _diffusion_build, _diffusion_parse, learns_from_subset=True,
    about="a class-conditional diffusion model trained on the trial's own real subset (pixel space, or latent-* "
          "presets: an autoencoder and a latent UNet); SDEdit variations"))
register(GeneratorEntry(
    "openai", _openai_label, lambda settings, train_on, seed: _openai_generator(settings), _openai_parse, paid=True,
    about="OpenAI's images API (GPT image edit; variations of each source); the bank is filled with a budget"))
register(GeneratorEntry(
    "folder", _folder_label, _folder_build, lambda settings, label: replace(settings, synthetic_folder=label),
    about="images made elsewhere, one sub-folder per class (named after their source to pair them)"))
# the diagnostics of issue 23 (measurements, not augmentation methods): blur without new content, and with it
register(GeneratorEntry(
    "reconstruct_own", _diffusion_label, _reconstruction_build, _diffusion_parse, learns_from_subset=True,
    diagnostic=True, about="diagnostic: the trial's own subset sent through its latent generator's autoencoder "
                           "(the generator's blur, no new content)"))
register(GeneratorEntry(
    "reconstruct_other", _diffusion_label, _reconstruction_build, _diffusion_parse, learns_from_subset=True,
    draws_from="rest", diagnostic=True,
    about="diagnostic: the rest of the training pool sent through the subset's latent autoencoder (new content "
          "through the generator's decoder; in the slice evaluation it includes test people's neighbouring slices)"))

# Figure 7.3's far point (issue 23): the pixel-space generator beside a latent one, in one profile
def _pixel_label(settings: GeneratorSettings) -> str:
    label = settings.pixel_preset
    _diffusion_config(replace(settings, diffusion_preset=label, diffusion_overrides=()))  # a bad name fails here
    if label.startswith(LATENT_PREFIX):
        raise ValueError(f"the pixel_diffusion arm is the pixel-space generator's, got the latent preset {label!r}: "
                         "use the diffusion arm for latent presets")
    return label


def _pixel_parse(settings: GeneratorSettings, label: str) -> GeneratorSettings:
    return replace(settings, pixel_preset=label, diffusion_preset=label, diffusion_overrides=())


register(GeneratorEntry(
    "pixel_diffusion", _pixel_label, _diffusion_build, _pixel_parse, learns_from_subset=True,
    about="the pixel-space diffusion generator (pixel_preset, quick by default: 32 px, upsampled) trained on the "
          "trial's own subset, beside a latent diffusion arm in the same profile; SDEdit variations"))


def settings_from(values: Mapping[str, Any]) -> GeneratorSettings:
    """Settings from any mapping with some of :class:`GeneratorSettings`' field names (a config's fields)."""
    known = GeneratorSettings.__dataclass_fields__
    return GeneratorSettings(**{k: v for k, v in values.items() if k in known})
