"""The study: trial specs, the synthetic-mix policy, and the resumable trial runner.

A trial is a frozen :class:`TrialSpec`; :func:`run_trial` is a pure function of it (and of the data and the
generators it names): a stratified real sample (nested across fractions, the same for every policy of one repeat),
optionally topped up with synthetic images drawn only from variants of that sample (or, in the control arm, with the
sample's own images repeated), trained by ``train.fit`` and evaluated on the fixed held-out split.

:func:`run_study` runs a grid of specs, writes each finished trial to its own file atomically and skips trials
already there, so a killed study resumes where it stopped and ends with the same table as an uninterrupted one.
Results come back as tidy long tables (see :func:`load_results`). Statistics and figures are ``stats`` and ``plots``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import paths
from .augment import POLICIES
from .data import CLASS_NAMES, MRIData, Split, check_fraction, stratified_sample
from .synth import registry
from .synth.registry import GeneratorSettings

CONTROL_ARMS = ("none", "repeat")
"""Arms that add no generated image: none (real images only) and repeat (the control: the trial's own real images
repeated to the same size). Every other synthetic kind is a generator of :mod:`mri_synth.synth.registry`."""


def synthetic_kinds() -> tuple[str, ...]:
    """Every value ``TrialSpec.synthetic`` may take: the control arms, then the registered generators."""
    return (*CONTROL_ARMS, *registry.names())


def generator_kind(synthetic: str) -> str:
    """How the tables describe an arm's added images: none, control, learned on the trial's subset, external."""
    return {"none": "none", "repeat": "control"}.get(synthetic) or registry.get(synthetic).kind


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines one trial. Its :attr:`key` is a stable hash of the content."""

    arch: str = "cnn"  # a name in the model registry (cnn, resnet18, vit, or a timm model)
    real_fraction: float = 1.0  # share of the real training images, stratified
    synthetic: str = "none"  # none, repeat or a registered generator (synthetic_kinds())
    synthetic_fraction: float = 0.0  # images added, as a share of the FULL training set's size
    synthetic_classes: tuple[str, ...] = ()  # classes that receive them; empty means all
    augment: str = "none"  # a policy of augment.POLICIES
    epochs: int = 10  # training budget in epochs (ignored when max_steps is set)
    max_steps: int | None = None  # training budget in optimizer steps, the same for every arm
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0  # the repeat index: it picks the real subset (shared by every policy) and the training seed
    pretrained: bool | None = None  # None: the registry's default for the architecture
    input_size: int = 0  # model input side in pixels; 0 means the registry's (224 for the pretrained models)
    generator: str = ""  # the generator's label (registry): what decides its images; empty for none/repeat arms

    def __post_init__(self) -> None:
        check_fraction(self.real_fraction, "real_fraction")
        object.__setattr__(self, "synthetic_classes", tuple(sorted(self.synthetic_classes)))
        if self.synthetic not in synthetic_kinds():
            raise ValueError(f"synthetic must be one of {synthetic_kinds()}, got {self.synthetic!r}")
        if self.augment not in POLICIES:
            raise ValueError(f"augment must be one of {tuple(POLICIES)}, got {self.augment!r}")
        # Only arms that use a generator carry its label, so changing a generator's settings reruns only its arms.
        if self.synthetic in CONTROL_ARMS:
            object.__setattr__(self, "generator", "")
        elif not self.generator:
            object.__setattr__(self, "generator", registry.get(self.synthetic).label(GeneratorSettings()))
        if not 0 <= self.synthetic_fraction <= 10:
            raise ValueError(f"synthetic_fraction must be in [0, 10], got {self.synthetic_fraction!r}")
        if (self.synthetic == "none") != (self.synthetic_fraction == 0):
            raise ValueError(
                f"synthetic={self.synthetic!r} with synthetic_fraction={self.synthetic_fraction}: use synthetic='none' "
                "exactly when nothing is added (synthetic_fraction=0)"
            )
        unknown = set(self.synthetic_classes) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"unknown synthetic_classes {sorted(unknown)}: choose from {', '.join(CLASS_NAMES)}")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise ValueError("epochs and max_steps must be >= 1")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        """A spec from its stored form (a trial file's ``spec``), with a message when this version cannot read it."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"a trial spec with fields {sorted(unknown)} that this version does not know: it was "
                             "written by another version of mri_synth; read it with that version or rerun the trial")
        return cls(**{k: tuple(v) if k == "synthetic_classes" else v for k, v in values.items()})

    @property
    def key(self) -> str:
        """A stable hash of the spec's content (field order and Python version do not matter)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def budget(self) -> str:
        return "steps" if self.max_steps else "epochs"

    @property
    def policy(self) -> str:
        """A human label of the arm, e.g. ``30% real + 70% diffusion``."""
        label = f"{self.real_fraction:.0%} real"
        if self.synthetic != "none":
            label += f" + {self.synthetic_fraction:.0%} {self.synthetic}"
            if self.synthetic_classes:
                label += f" ({'+'.join(c.split('_')[0] for c in self.synthetic_classes)})"
        if self.augment != "none":
            label += f" + {self.augment}"
        return label

    def table_columns(self) -> dict[str, Any]:
        """The spec as the key columns of the results tables."""
        return {
            "trial_key": self.key, "arch": self.arch, "real_fraction": self.real_fraction,
            "synthetic": self.synthetic, "synthetic_fraction": self.synthetic_fraction,
            "synthetic_classes": "+".join(self.synthetic_classes) or "all", "augment": self.augment,
            "budget": self.budget, "epochs": self.epochs, "max_steps": self.max_steps or 0,
            "batch_size": self.batch_size, "lr": self.lr, "input_size": self.input_size,
            "pretrained": {None: "default", True: "yes", False: "no"}[self.pretrained], "seed": self.seed,
            "policy": self.policy, "generator": self.generator, "generator_kind": generator_kind(self.synthetic),
        }


def parse_arm(arm: str, real_fraction: float) -> dict[str, Any]:
    """Spec fields of an arm written as text: parts joined by ``+``.

    ``none``, ``basic``, ``autoaugment``, ... (``augment.POLICIES``): real images with that augmentation; ``repeat``
    or a registered generator (``diffusion``, ``openai``, ``folder``, ...): fill the real fraction up to the full
    training-set size with that kind of image;
    ``diffusion:Mild_Demented,Moderate_Demented``: only those classes receive synthetic images;
    ``diffusion+autoaugment``: both.
    """
    out: dict[str, Any] = {}
    for part in arm.split("+"):
        name, _, classes = part.partition(":")
        if name in POLICIES:
            if name != "none":
                out["augment"] = name
        elif name in synthetic_kinds():
            out |= {"synthetic": name, "synthetic_fraction": round(1 - real_fraction, 6)}
            if classes:
                out["synthetic_classes"] = tuple(classes.split(","))
        else:
            raise ValueError(f"unknown arm part {part!r} in {arm!r}: use an augmentation ({', '.join(POLICIES)})"
                             f", a synthetic kind ({', '.join(synthetic_kinds()[1:])}) or 'kind:Class,Class', "
                             "joined by +")
    return out


def study_grid(archs: Sequence[str], real_fractions: Sequence[float], arms: Sequence[str], seeds: Iterable[int],
               generators: GeneratorSettings | None = None, **train: Any) -> list[TrialSpec]:
    """Every (architecture, real fraction, arm, seed), seed-major so an interrupted study has whole repeats.

    Arms that would add nothing (a synthetic fill at 100% real) are left out; ``arm@0.3,0.4`` runs an arm at those
    real fractions only. ``generators`` gives each generator arm its label (default settings when omitted);
    ``train`` sets the other spec fields (epochs, max_steps, batch_size, lr, pretrained, input_size).
    """
    settings = generators or GeneratorSettings()
    labels: dict[str, str] = {}
    specs = []
    for seed in seeds:
        for arch in archs:
            for fraction in real_fractions:
                for arm in arms:
                    arm, _, only_at = arm.partition("@")  # "autoaugment@0.3": this arm at these fractions only
                    if only_at and not any(abs(fraction - float(f)) < 1e-9 for f in only_at.split(",")):
                        continue
                    extra = parse_arm(arm, fraction)
                    if "synthetic" in extra and extra["synthetic_fraction"] <= 0:
                        continue
                    kind = extra.get("synthetic", "none")
                    if kind not in CONTROL_ARMS:
                        if kind not in labels:
                            labels[kind] = registry.get(kind).label(settings)
                        extra["generator"] = labels[kind]
                    specs.append(TrialSpec(arch=arch, real_fraction=fraction, seed=seed, **extra, **train))
    return list(dict.fromkeys(specs))  # the same spec twice is one trial


# -------------------------------------------------------------------------------------------------- one trial


@dataclass
class StudyContext:
    """What trials share: the data, where synthetic images live, how generators run, where to train.

    A trial's generator is rebuilt from its spec's label (the images' content) and ``generators`` (how to run it:
    the device, threads and cache below are put into it), so a trial stays a function of its spec.
    """

    data: MRIData
    bank_root: Path = field(default_factory=lambda: paths.cache_dir() / "bank")
    generator_root: Path = field(default_factory=lambda: paths.cache_dir() / "diffusion")  # trained generators
    generators: GeneratorSettings = field(default_factory=GeneratorSettings)
    device: str = "auto"
    cpu_threads: int = 0  # 0: torch's default; 1 is faster when other jobs share a small CPU (no spin-waiting)
    progress: bool = False  # inner progress bars (training, generation); the study has its own

    def generator_settings(self, spec: TrialSpec) -> GeneratorSettings:
        """The settings that build ``spec``'s generator: its label's content, this context's way of running."""
        runtime = replace(self.generators, device=self.device, cpu_threads=self.cpu_threads,
                          generator_root=str(self.generator_root), progress=self.progress)
        return runtime.with_label(spec.synthetic, spec.generator)


@dataclass(frozen=True)
class TrainingSet:
    """A trial's training images and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    real_ids: tuple[str, ...]
    synthetic_sources: tuple[str, ...]  # the real source id of each added image (its own id for the control)
    generator_fingerprint: str


def synthetic_per_class(spec: TrialSpec, full_counts: Sequence[int]) -> list[int]:
    """Images added per class: ``synthetic_fraction`` of each receiving class's size in the full training set.

    Choosing classes (say Mild and Moderate only) gives those classes what they would get with all classes chosen,
    and the others nothing.
    """
    chosen = set(spec.synthetic_classes or CLASS_NAMES)
    return [round(spec.synthetic_fraction * n) if CLASS_NAMES[c] in chosen else 0 for c, n in enumerate(full_counts)]


def _repeat_draw(members: np.ndarray, k: int, seed: int) -> np.ndarray:
    # whole passes over the subset, then a seeded remainder: each real image repeats as evenly as possible
    rng = np.random.default_rng([seed, 99])
    passes, rest = divmod(k, len(members))
    return np.concatenate([np.tile(members, passes), rng.permutation(members)[:rest]]).astype(np.int64)


def training_set(spec: TrialSpec, context: StudyContext) -> TrainingSet:
    """The real sample of the trial's repeat plus its synthetic (or repeated) images."""
    full = context.data.train
    real = full.subset(stratified_sample(full.labels, spec.real_fraction, seed=spec.seed))
    wanted = synthetic_per_class(spec, full.class_counts())
    if spec.synthetic == "none" or sum(wanted) == 0:
        return TrainingSet(real.images, real.labels, real.ids, (), "")
    if spec.synthetic == "repeat":
        pick = np.concatenate([_repeat_draw(np.flatnonzero(real.labels.numpy() == c), k, spec.seed)
                               for c, k in enumerate(wanted) if k])
        extra = real.subset(torch.from_numpy(pick))
        return TrainingSet(torch.cat([real.images, extra.images]), torch.cat([real.labels, extra.labels]),
                           real.ids, extra.ids, "repeat")
    from .synth import SyntheticBank

    # a generator that learns does so from this trial's real subset only (cached by it: one subset trains once)
    entry = registry.get(spec.synthetic)
    generator = registry.build(spec.synthetic, context.generator_settings(spec),
                               real if entry.learns_from_subset else None, seed=spec.seed)
    bank = SyntheticBank(context.bank_root)
    images, labels, sources = [real.images], [real.labels], []
    for c, k in enumerate(wanted):
        if not k:
            continue
        members = real.subset((real.labels == c).nonzero().flatten())
        img, lab, _, src = registry.fill_and_sample(generator, bank, members, k, seed=spec.seed,
                                                    progress=context.progress)
        images.append(img), labels.append(lab), sources.extend(src)
    return TrainingSet(torch.cat(images), torch.cat(labels), real.ids, tuple(sources), generator.fingerprint)


def run_trial(spec: TrialSpec, context: StudyContext) -> dict[str, Any]:
    """Train and evaluate one trial; return its metrics, its per-epoch history and what it was trained on."""
    from .models import get_spec
    from .train import TrainConfig, fit

    start = time.perf_counter()
    train_set = training_set(spec, context)
    config = TrainConfig(epochs=spec.epochs, max_steps=spec.max_steps, batch_size=spec.batch_size, lr=spec.lr,
                         augment=spec.augment, device=context.device, seed=spec.seed, progress=context.progress)
    model_spec = get_spec(spec.arch)
    if spec.input_size:
        model_spec = model_spec.with_input_size(spec.input_size)
    result = fit(spec.arch, train_set.images, train_set.labels, context.data.test.images, context.data.test.labels,
                 config, spec=model_spec, pretrained=spec.pretrained)
    history = result.history
    final = history.iloc[-1]
    best = history.loc[history["test_loss"].idxmin()]
    metrics = {k: float(final[k]) for k in history.columns if k not in ("epoch", "step", "wall_time_s")}
    metrics |= {"best_test_loss": float(best["test_loss"]), "best_epoch": float(best["epoch"]),
                "steps": float(final["step"]), "train_images": float(len(train_set.labels)),
                "real_images": float(len(train_set.real_ids)), "synthetic_images": float(len(train_set.synthetic_sources)),
                "train_time_s": time.perf_counter() - start}
    return {"metrics": metrics, "history": history.to_dict(orient="list"),
            "generator_fingerprint": train_set.generator_fingerprint}


# ------------------------------------------------------------------------------------------------ the runner


def provenance(data: MRIData) -> dict[str, Any]:
    """What a result depends on beyond its spec: data, code version, packages, machine."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=paths.PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    versions = {p: metadata.version(p) for p in ("torch", "torchvision", "timm", "diffusers", "numpy", "pandas")}
    return {"data_source": data.source, "data_fingerprint": data.fingerprint, "git_commit": commit,
            "git_dirty": dirty, "versions": versions, "python": platform.python_version(),
            "machine": platform.machine(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""}


def _atomic_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=float))
    os.replace(tmp, path)


def run_study(specs: Sequence[TrialSpec], context: StudyContext, results_dir: str | os.PathLike, *,
              progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every spec not yet in ``results_dir``; return the (results, history) tables of all of them.

    Each finished trial is written atomically to ``results_dir/trials/<key>.json``, so a killed study loses at most
    the trial it was running and the next call resumes there. ``results.parquet`` and ``history.parquet`` are
    rewritten at the end. A results folder made from other data is refused rather than mixed.
    """
    results_dir = Path(results_dir)
    trials_dir = results_dir / "trials"
    trials_dir.mkdir(parents=True, exist_ok=True)
    prov = provenance(context.data)
    prov_file = results_dir / "provenance.json"
    if prov_file.exists():
        earlier = json.loads(prov_file.read_text())
        if earlier["data_fingerprint"] != prov["data_fingerprint"]:
            raise ValueError(f"{results_dir} holds results on data {earlier['data_source']} ({earlier['data_fingerprint']})"
                             f", not {context.data.source}: choose another results folder for this data")
    else:
        _atomic_json(prov_file, prov)
    migrate_trial_keys(trials_dir)
    todo = [s for s in specs if not (trials_dir / f"{s.key}.json").exists()]
    if context.cpu_threads:
        torch.set_num_threads(context.cpu_threads)
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="trials", unit="trial", disable=not progress)
    for spec in todo:
        bar.set_postfix_str(f"{spec.arch} {spec.policy} seed {spec.seed}")
        outcome = run_trial(spec, context)
        _atomic_json(trials_dir / f"{spec.key}.json", {"spec": asdict(spec), "columns": spec.table_columns(),
                                                         "provenance": {"git_commit": prov["git_commit"]}, **outcome})
        bar.update(1)
    bar.close()
    results, history = load_results(results_dir, keys=[s.key for s in specs])
    results.to_parquet(results_dir / "results.parquet")
    history.to_parquet(results_dir / "history.parquet")
    return results, history


def migrate_trial_keys(trials_dir: str | os.PathLike) -> int:
    """Give trial files written under an older key scheme their current key, so they are reused, not rerun.

    Older versions put the diffusion preset into the spec of every arm; a ``none`` or ``repeat`` trial's key then
    changed with the preset. Each file's stored spec is read back through :class:`TrialSpec` (which drops the
    label where no generator is used) and the file is rewritten under that spec's key. A file whose current key
    is already taken by another is moved to ``superseded/`` beside them, never deleted.

    Returns:
        How many files were given a new key.
    """
    trials_dir = Path(trials_dir)
    moved = 0
    for path in sorted(trials_dir.glob("*.json")):
        trial = json.loads(path.read_text())
        spec = TrialSpec.from_dict(trial["spec"])
        if spec.key == path.stem:
            continue
        target = trials_dir / f"{spec.key}.json"
        if target.exists():
            (trials_dir / "superseded").mkdir(exist_ok=True)
            os.replace(path, trials_dir / "superseded" / path.name)
            continue
        _atomic_json(target, {**trial, "spec": asdict(spec), "columns": spec.table_columns(),
                              "migrated_from": path.stem})
        path.unlink()
        moved += 1
    if moved:
        print(f"{trials_dir}: {moved} trial file(s) written by an older version were given their current key")
    return moved


def load_results(results_dir: str | os.PathLike, keys: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy tables of a results folder (or of several, searched recursively).

    Returns:
        ``results``: one row per trial x metric (spec columns, ``metric``, ``value``);
        ``history``: one row per trial x evaluation x metric (spec columns, ``epoch``, ``step``, ``metric``, ``value``).
        Rows follow ``keys`` when given, else the trials' file order.
    """
    root = Path(results_dir)
    # keyed by each stored spec's current key, so files written under an older key scheme read as today's
    trials = {}
    for path in sorted(root.rglob("trials/*.json")):
        trial = json.loads(path.read_text())
        trials[TrialSpec.from_dict(trial["spec"]).key] = trial
    if keys is not None:
        missing = [k for k in keys if k not in trials]
        if missing:
            raise ValueError(f"{len(missing)} trial(s) missing from {root}: run the study to finish them")
        trials = {k: trials[k] for k in keys}
    rows, hist = [], []
    for trial in trials.values():
        cols = TrialSpec.from_dict(trial["spec"]).table_columns()  # today's columns, also for older files
        rows += [{**cols, "metric": m, "value": v} for m, v in trial["metrics"].items()]
        h = pd.DataFrame(trial["history"])
        long = h.melt(id_vars=["epoch", "step"], var_name="metric", value_name="value")
        hist.append(long.assign(**cols))
    results = pd.DataFrame(rows)
    history = pd.concat(hist, ignore_index=True) if hist else pd.DataFrame()
    return results, history


__all__ = ["CONTROL_ARMS", "StudyContext", "TrainingSet", "TrialSpec", "generator_kind", "load_results",
           "migrate_trial_keys", "parse_arm", "provenance", "run_study", "run_trial", "study_grid",
           "synthetic_kinds", "synthetic_per_class", "training_set"]
