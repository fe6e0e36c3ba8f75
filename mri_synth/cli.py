"""``mri-synth``: the command-line entry points.

    mri-synth notebooks --profile quick        run notebooks 01..07 in order (papermill) into runs/quick
    mri-synth data [SOURCE]                    decode and cache a data source; print its class counts, people and
                                               the leakage audit (people in both splits, 1-NN pixel accuracy)
    mri-synth study --arch cnn --arms none repeat diffusion --fractions 1.0 0.3 --seeds 5 --epochs 10
                                               run (or resume) one architecture's grid (--ray: as Ray tasks)
    mri-synth generate --generator openai --fraction 1.0 --variants 3 --budget 50 [--dry-run]
                                               fill the synthetic bank (the OpenAI key comes from OPENAI_API_KEY)
    mri-synth generators --profile real        train (or find) a profile's generators and fill their banks, two
                                               processes at a time; the study then only reads them
    mri-synth tune --split slice subject       the 100% real arm's settings, chosen on validation per evaluation
    mri-synth report [--results DIR]           summaries, the thesis comparison and paired tests of finished trials

Each sub-command is a thin wrapper over a package function, so a notebook or script can call the same thing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mri_synth import paths
from mri_synth.analysis import findings
from mri_synth.analysis.contrasts import against_reference, paired_contrasts, parse_contrast
from mri_synth.analysis.stats import summarize, thesis_comparison
from mri_synth.chapters.exploration import class_count_table
from mri_synth.chapters.generation import GenerationConfig, fill_bank, real_sample
from mri_synth.chapters.results import load_all_results
from mri_synth.chapters.training import ArchitectureStudy, run_architecture
from mri_synth.data.audit import leakage_audit
from mri_synth.data.cache import load_data
from mri_synth.notebooks import load_profile, profile_study, run_batch
from mri_synth.study.generators import prepare_generators
from mri_synth.study.runner import load_results, trial_machines, write_tables
from mri_synth.study.trial import StudyContext
from mri_synth.study.trials import VALIDATION_MODES
from mri_synth.study.tuning import tune_baseline
from mri_synth.synth import registry
from mri_synth.training import heap, settings
from mri_synth.training.augment import POLICIES
from mri_synth.training.settings import TrainSettings


def _notebooks(args: argparse.Namespace) -> None:
    runs = run_batch(args.profile, run_dir=args.run_dir, only=args.only, log_output=args.log_output)
    print(f"ran {len(runs)} notebook(s) in {sum(r.seconds for r in runs):.0f} s; outputs in {runs[-1].output.parent}")


def _data(args: argparse.Namespace) -> None:
    data = load_data(args.source)
    print(f"{data.source} (fingerprint {data.fingerprint})")
    print(class_count_table(data).to_string())
    audit = leakage_audit(data)  # people per split and how much of test a pixel lookup in train already finds
    print(f"\npeople recovered from the pixels: {data.subjects.summary()}\n{audit.people.to_string()}")
    print(audit.summary())


def _study(args: argparse.Namespace) -> None:
    if args.profile:  # the profile's grid for --arch, as notebooks 04-06 would run it; the flags choose its trials
        defaults = vars(build_parser().parse_args(["study"]))
        ignored = sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                         if k not in PROFILE_STUDY_FLAGS and v != defaults.get(k, v))
        if ignored:
            raise ValueError(f"--profile {args.profile} takes every setting from the profile, so {', '.join(ignored)} "
                             "would be ignored: drop them (only --arch, --first-seed, --seeds, --split and the Ray "
                             "flags go with --profile), or run without --profile")
        config = profile_study(args.profile, args.arch)
        chosen = {k: v for k, v in (("first_seed", args.first_seed), ("n_seeds", args.seeds),
                                    ("splits", args.split)) if v is not None}
        config = replace(config, **chosen)
    else:
        config = ArchitectureStudy(arch=args.arch, data_source=args.data or "", real_fractions=args.fractions,
                                   arms=args.arms, n_seeds=_given(args.seeds, "n_seeds"),
                                   first_seed=_given(args.first_seed, "first_seed"),
                                   splits=_given(args.split, "splits"),
                                   pretrained=args.pretrained, diffusion_preset=args.diffusion_preset,
                                   openai_model=args.openai_model, openai_quality=args.openai_quality,
                                   synthetic_folder=_absolute(args.synthetic_folder), device=args.device,
                                   cpu_threads=args.cpu_threads, results_dir=_absolute(args.results),
                                   validation=args.validation, carry=args.carry, subject_epochs=args.subject_epochs,
                                   subject_lr=args.subject_lr, compile_model=args.compile,
                                   **asdict(TrainSettings.of(args)))  # --epochs, --lr, ...: the training settings
    print(config.plan().to_string())
    ray = dict(address=args.ray_address or None, num_gpus=args.ray_gpus) if args.ray or args.ray_address else None
    try:
        results, _ = run_architecture(config, ray=ray)
    except ImportError as err:  # --ray without the extra installed
        raise ValueError(str(err)) from None
    except RuntimeError as err:  # distributed.TrialsFailed: the finished trials are kept; say what to rerun
        if type(err).__name__ != "TrialsFailed":
            raise
        raise ValueError(str(err)) from None
    print(summarize(results, "test_loss", by=["policy"], min_repeats=1).to_string())  # one seed: NaN intervals
    print(f"results: {config.results}")


PROFILE_STUDY_FLAGS = {"profile", "arch", "first_seed", "seeds", "split", "ray", "ray_address", "ray_gpus", "func",
                       "command"}
"""``mri-synth study`` flags that go with ``--profile``: which architecture and which of its trials, and where."""


def _given(value: Any, field_name: str) -> Any:
    """A flag's value, or ArchitectureStudy's default where it was not given (None)."""
    default = ArchitectureStudy.__dataclass_fields__[field_name].default
    return default if value is None else value


def _generators(args: argparse.Namespace) -> None:
    study = profile_study(args.profile)
    specs = [s for s in study.specs if (not args.split or s.split in args.split)
             and (args.repeats is None or s.seed in args.repeats)]
    if args.diffusion_preset:  # another preset of the same grid (e.g. a faster sampler of the same weights)
        settings = replace(study.generator_settings(), diffusion_preset=args.diffusion_preset)
        label = registry.get("diffusion").label(settings)
        specs = [replace(s, generator=label) if s.synthetic == "diffusion" else s for s in specs]
    data = load_data(study.data_source)
    context = StudyContext(data=data, generators=study.generator_settings(), device=study.device, cpu_threads=1)
    table = prepare_generators(specs, context, workers=args.workers)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["fingerprint"]).to_string(index=False) if len(table) else "no generator arms")
    print(f"{len(table)} generator(s), {int(table.trained_now.sum()) if len(table) else 0} trained now, "
          f"{table.attrs.get('wall_s', 0):.0f} s")


def _tune(args: argparse.Namespace) -> None:
    context = StudyContext(data=load_data(args.data or None), device=args.device, cpu_threads=args.cpu_threads)

    results = Path(_absolute(args.results)) if args.results else paths.results_dir() / "tuning"
    for split in args.split:
        table = tune_baseline(context, results / split, args.arch, split, lrs=args.lrs,
                              weight_decays=args.weight_decays, epochs=args.epochs, seeds=range(args.seeds),
                              batch_size=args.batch_size, input_sizes=args.input_sizes,
                              prefix_budgets=not args.train_every_budget, pretrained=args.pretrained)
        print(f"{split}: chosen on validation ({table.criterion[0]}):")
        print(table.to_string(index=False), end="\n\n")


def _generate(args: argparse.Namespace) -> None:
    config = GenerationConfig(data_source=args.data or "", generator=args.generator, real_fraction=args.fraction,
                              n_variants=args.variants, seed=args.seed, diffusion_preset=args.diffusion_preset,
                              openai_model=args.openai_model, openai_quality=args.openai_quality,
                              synthetic_folder=_absolute(args.synthetic_folder), budget_usd=args.budget,
                              bank_dir=_absolute(args.bank), device=args.device, cpu_threads=args.cpu_threads)
    data = load_data(config.data_source)
    if args.dry_run:
        if not registry.get(config.generator).paid:
            raise ValueError(f"--dry-run prices a paid generator; {config.generator} costs nothing: drop --dry-run")

        sources = real_sample(data, config)
        generator = registry.build(config.generator, config.generator_settings())
        config.bank().fill(generator, sources.images, sources.labels, sources.ids, config.n_variants,
                           seed=config.seed, budget_usd=config.budget_usd, dry_run=True)
        return
    run = fill_bank(data, config)
    print(run.summary)


def _report(args: argparse.Namespace) -> None:
    results, _ = load_all_results(_absolute(args.results))
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summarize(results, "test_loss").to_string(), end="\n\n")
        if "cnn" in set(results.arch):
            print(thesis_comparison(results).to_string(), end="\n\n")
        at = results[results.real_fraction == args.fraction]
        if args.reference in set(at.policy) and at.policy.nunique() > 1:
            print(paired_contrasts(at, against_reference(at, args.reference), "test_loss",
                                   exploratory=True).to_string())


def _tables(args: argparse.Namespace) -> None:
    for folder in args.folders:
        if not any(Path(_absolute(folder)).glob("trials/*.json")):
            raise SystemExit(f"{folder} holds no trial files (trials/*.json): name a results folder of a study")
        results, history = write_tables(_absolute(folder))
        print(f"{folder}: {results.trial_key.nunique()} trials -> results.parquet ({len(results)} rows), "
              f"history.parquet ({len(history)} rows)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mri-synth", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    nb = sub.add_parser("notebooks", help="run the numbered notebooks with a profile's parameters")
    nb.add_argument("--profile", default="quick", help="profile name in profiles/ or a YAML path (default: quick)")
    nb.add_argument("--run-dir", default=None, help="output folder (default: runs/<profile>; reuse it to resume)")
    nb.add_argument("--only", nargs="*", default=None, help="notebook stems or prefixes to run, e.g. 01 07")
    nb.add_argument("--log-output", action="store_true", help="stream cell outputs while running")
    nb.set_defaults(func=_notebooks)

    defaults = ArchitectureStudy.__dataclass_fields__  # one set of defaults: the notebooks' configs
    default = {name: f.default for name, f in defaults.items()}
    arms = ", ".join([*POLICIES, "repeat", *registry.names()][1:])
    st = sub.add_parser("study", help="run (or resume) one architecture's study grid")
    st.add_argument("--arch", default=default["arch"], help="registry or timm model name (default cnn)")
    st.add_argument("--data", default=None, help="data source (default: MRI_SYNTH_DATA or the hub dataset)")
    st.add_argument("--fractions", type=float, nargs="+", default=list(default["real_fractions"]),
                    help="real fractions")
    st.add_argument("--arms", nargs="+", default=list(default["arms"]),
                    help=f"arms: none, {arms}; kind:Class,Class; joined by +; arm@0.3 (default: %(default)s)")
    st.add_argument("--profile", default="", help="run this profile's grid of --arch (every setting from the "
                    "profile; --first-seed, --seeds and --split choose which of its trials)")
    st.add_argument("--seeds", type=int, default=None, help=f"repeats per setting (default {default['n_seeds']})")
    st.add_argument("--first-seed", type=int, default=None,
                    help="first repeat index (extend a finished study; default 0)")
    st.add_argument("--split", nargs="+", default=None, choices=["slice", "subject"],
                    help="evaluations: slice (the source's split, thesis-comparable), subject (people never seen); "
                         "default slice")
    st.add_argument("--pretrained", action="store_true", help="start from pretrained weights (timm cache or file)")
    st.add_argument("--validation", default="carved", choices=VALIDATION_MODES,
                    help="where checkpoints are chosen: carved (the protocol's fixed validation set), none (no carve, "
                         "last step) or own (15%% of the trial's own training set); the last two read the thesis")
    st.add_argument("--carry", action="store_true", help="each repeat starts from the weights the previous repeat "
                                                         "ended with (the thesis's loop read as never re-initialising; "
                                                         "needs --validation none and repeats run in order)")
    settings.add_arguments(st, **{name: default[name] for name in TrainSettings.names()})
    st.add_argument("--compile", action="store_true", help="torch.compile each classifier (the same numbers; faster "
                    "where benchmarks/results/arch_trial_cost_cpu.txt shows it)")
    st.add_argument("--subject-epochs", type=int, default=default["subject_epochs"],
                    help="the subject evaluation's epochs when tuning froze another budget for it (0: --epochs)")
    st.add_argument("--subject-lr", type=float, default=default["subject_lr"],
                    help="the subject evaluation's lr when tuning froze another for it (0: --lr)")
    _generator_options(st, default)
    st.add_argument("--results", default=None, help="results folder (default results/); the arch is a sub-folder")
    st.add_argument("--ray", action="store_true", help="run the trials as tasks on a local Ray (pip install -e "
                    "'.[ray]'): generators once per subset, trials with a share of a GPU each")
    st.add_argument("--ray-address", default="", help="run them on the Ray cluster at this address (e.g. auto, "
                    "ray://host:10001); implies --ray")
    st.add_argument("--ray-gpus", type=float, default=None,
                    help="GPU share per trial task (default: 0.125 when the cluster has GPUs, else 0: 8 trials "
                    "share a GPU, 3.0x one at a time on an H100)")
    st.set_defaults(func=_study)

    gn = sub.add_parser("generators", help="train (or find) a profile's generators and fill their banks")
    gn.add_argument("--profile", default="real", help="the profile whose grid's generators to prepare (default real)")
    gn.add_argument("--split", nargs="*", default=None, choices=["slice", "subject"], help="evaluations (default all)")
    gn.add_argument("--repeats", type=int, nargs="*", default=None, help="repeat indices (default all)")
    gn.add_argument("--diffusion-preset", default="", help="prepare this preset instead of the profile's")
    gn.add_argument("--workers", type=int, default=2, help="processes at once, one thread each (default 2)")
    gn.set_defaults(func=_generators)

    tu = sub.add_parser("tune", help="choose the 100%% real arm's lr, weight decay and epochs on validation")
    tu.add_argument("--arch", default=default["arch"])
    tu.add_argument("--data", default=None, help="data source (default: MRI_SYNTH_DATA or the hub dataset)")
    tu.add_argument("--split", nargs="+", default=["slice", "subject"], choices=["slice", "subject"])
    tu.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-4])
    tu.add_argument("--weight-decays", type=float, nargs="+", default=[0.0, 1e-4])
    tu.add_argument("--epochs", type=int, nargs="+", default=[5, 10], help="epochs of the 100%% pool (equal steps)")
    tu.add_argument("--train-every-budget", action="store_true", help="train each budget on its own instead of "
                    "reading the shorter ones from the longest run's history (the same run, step for step)")
    tu.add_argument("--seeds", type=int, default=1)
    weights = tu.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", dest="pretrained", action="store_const", const=True, default=None,
                         help="start from the architecture's pretrained weights (timm cache or a local file)")
    weights.add_argument("--from-scratch", dest="pretrained", action="store_const", const=False,
                         help="start from random weights (default: the architecture's own default, pretrained for "
                              "resnet18 and vit)")
    tu.add_argument("--input-sizes", type=int, nargs="+", default=[0],
                    help="input sizes in px to choose among (0: the architecture's own)")
    tu.add_argument("--batch-size", type=int, default=default["batch_size"])
    tu.add_argument("--device", default=default["device"])
    tu.add_argument("--cpu-threads", type=int, default=default["cpu_threads"])
    tu.add_argument("--results", default=None, help="folder (default results/tuning); one sub-folder per split")
    tu.set_defaults(func=_tune)

    ge = sub.add_parser("generate", help="fill the synthetic bank with variations of a stratified real sample")
    ge.add_argument("--generator", default="diffusion", choices=registry.names())
    ge.add_argument("--data", default=None, help="data source (default: MRI_SYNTH_DATA or the hub dataset)")
    ge.add_argument("--fraction", type=float, default=1.0, help="share of the training images to vary")
    ge.add_argument("--variants", type=int, default=3, help="variations per source (30%% + 70%% needs 3)")
    ge.add_argument("--seed", type=int, default=0)
    _generator_options(ge, default)
    ge.add_argument("--budget", type=float, default=1.0, help="USD the generator may spend in this bank in all")
    ge.add_argument("--bank", default=None, help="bank folder (default .cache/bank)")
    ge.add_argument("--dry-run", action="store_true", help="print the calls and the estimated cost, send nothing")
    ge.set_defaults(func=_generate)

    rp = sub.add_parser("report", help="summaries and paired comparisons of finished trials")
    rp.add_argument("--results", default=None, help="results folder (default results/)")
    rp.add_argument("--reference", default="30% real", help="arm the others are compared with")
    rp.add_argument("--fraction", type=float, default=0.3, help="real fraction of the paired comparison")
    rp.set_defaults(func=_report)

    tb = sub.add_parser("tables", help="rewrite a results folder's results.parquet and history.parquet from its "
                                       "trial files")
    tb.add_argument("folders", nargs="+", help="results folders (each holds trials/)")
    tb.set_defaults(func=_tables)

    fi = sub.add_parser("findings", help="write the README's findings block from a profile's recorded results")
    fi.add_argument("--profile", default="rerun", help="the profile whose study, results folder and contrasts to read "
                    "(default rerun, the study's current answer)")
    fi.add_argument("--readme", default=None, help="the Markdown file holding the findings markers (default: the "
                    "profile's, README.md for rerun, benchmarks/results/real/README.md for the superseded real grid)")
    fi.add_argument("--arch", default="cnn", help="the architecture whose block to write (its own markers; default "
                    "cnn)")
    fi.add_argument("--check", action="store_true", help="fail if the file's block differs from the recorded tables'")
    fi.add_argument("--results", default=None, help="read the trials here instead of the profile's results folder "
                    "(e.g. a snapshot of the files being committed)")
    fi.add_argument("--thesis-budget", default=None,
                    help="the thesis-budget rows' results folder (default: the profile's 07_results thesis_budget_dir)")
    fi.set_defaults(func=_findings)

    data = sub.add_parser("data", help="decode and cache a data source, print its class counts and leakage audit")
    data.add_argument("source", nargs="?", default=None,
                      help="'sample', a hub id or a folder (default: MRI_SYNTH_DATA)")
    data.set_defaults(func=_data)
    return parser


def _findings(args: argparse.Namespace) -> None:
    notebooks = load_profile(args.profile).get("notebooks") or {}
    study = profile_study(args.profile, args.arch)
    family = (notebooks.get("07_results") or {}).get("contrasts") or []
    folder = Path(_absolute(args.results)) if args.results else study.results
    results, _ = load_results(folder)
    if results.empty:
        raise FileNotFoundError(f"no trial results under {folder}: run the {args.profile} profile's study first")
    planned = {spec.policy for spec in study.specs}  # an architecture without the diagnostic arms lists none
    diagnostics = [c for c in (notebooks.get("07_results") or {}).get("diagnostic_contrasts") or []
                   if set(parse_contrast(c)) <= planned]
    block = (findings.progress_line(results, len(study.specs), arch=args.arch)
             + findings.machines_line(trial_machines(folder), arch=args.arch) + "\n"
             + findings.findings_block(results, family, arch=args.arch, diagnostics=diagnostics))
    thesis_dir = (_absolute(args.thesis_budget) if args.thesis_budget
                  else (notebooks.get("07_results") or {}).get("thesis_budget_dir"))
    if thesis_dir and args.arch == "cnn":  # the basic CNN's thesis-comparable rows
        folder_tb = paths.project_path(thesis_dir)
        folder_tb = folder_tb / "cnn" if (folder_tb / "cnn").is_dir() else folder_tb
        thesis_results = load_results(folder_tb)[0] if folder_tb.is_dir() else pd.DataFrame()
        block += "\n" + findings.thesis_budget_block(thesis_results)
    readme = _absolute(args.readme or str(paths.project_path(findings.readme_for(args.profile))))
    if args.check:
        if findings.read_block(readme, args.arch) != block:
            raise ValueError(f"the findings block in {readme} differs from what {folder} gives: run "
                             f"mri-synth findings --profile {args.profile} --arch {args.arch} and commit the file")
        print(f"{readme}: the findings block matches {folder}")
        return
    changed = findings.write_block(readme, block, args.arch)
    print(block + f"\n{readme} {'updated' if changed else 'already up to date'}")


def _absolute(path: str | None) -> str:
    # a path typed on the command line means the shell's folder (the configs read relative paths from the project)
    return str(Path(path).expanduser().resolve()) if path else ""


def _generator_options(parser: argparse.ArgumentParser, default: dict) -> None:
    parser.add_argument("--diffusion-preset", default=default["diffusion_preset"],
                        help="the diffusion generator's preset: toy, quick, gpu (pixel space), latent-toy, latent-cpu, "
                             "latent-gpu (default: %(default)s, about 18 CPU minutes per 30%% subset)")
    parser.add_argument("--openai-model", default=default["openai_model"],
                        help="the openai generator's model (default: the generator's own default)")
    parser.add_argument("--openai-quality", default=default["openai_quality"])
    parser.add_argument("--synthetic-folder", default=None, help="the folder arm's images, one sub-folder per class")
    parser.add_argument("--device", default=default["device"])
    parser.add_argument("--cpu-threads", type=int, default=default["cpu_threads"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    heap.retain_freed_memory()  # an entry point chooses the process-wide allocator setting (mri_synth.training.heap)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:  # our errors name the problem and the fix: show them plainly
        print(f"mri-synth: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
