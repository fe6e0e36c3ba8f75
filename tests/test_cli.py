"""The command line: sub-commands call the package and print our errors plainly, with exit status 2."""



from mri_synth import cli
from mri_synth.chapters.generation import GenerationConfig
from mri_synth.chapters.training import ArchitectureStudy
from mri_synth.notebooks import profile_study
from mri_synth.study import trials as study
from mri_synth.synth import registry


def test_data_prints_class_counts(capsys):
    assert cli.main(["data", "sample"]) == 0
    out = capsys.readouterr().out
    assert "Moderate_Demented" in out and "288" in out
    # the leakage audit: 9 people, all in both splits, and the 1-NN pixel lookup's accuracy
    assert "9 groups of 288 slices" in out and "people: 9 (9 with slices in both train and test)" in out
    assert "1-NN pixel accuracy of test from 100% of train (223 slices): 1.000" in out


def test_bad_source_is_a_plain_error(capsys, tmp_path):
    assert cli.main(["data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_unknown_profile_is_a_plain_error(capsys):
    assert cli.main(["notebooks", "--profile", "nope"]) == 2
    assert "not found" in capsys.readouterr().err


def test_study_then_report_on_the_sample(capsys, tmp_path):
    args = ["study", "--data", "sample", "--fractions", "0.3", "--arms", "none", "repeat", "--seeds", "2",
            "--epochs", "1", "--batch-size", "32", "--results", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "30% real + 70% repeat" in out and len(list((tmp_path / "cnn" / "trials").glob("*.json"))) == 4
    assert cli.main(["report", "--results", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "a_better_share" in report and "30% real + 70% repeat" in report
    assert "epochs" not in report.splitlines()[0]  # one grid: nothing to tell apart
    # a second grid (2 epochs) in the same folder is reported beside the first, never pooled with it
    assert cli.main([a if a != "1" else "2" for a in args]) == 0  # --epochs 2
    capsys.readouterr()
    assert cli.main(["report", "--results", str(tmp_path)]) == 0
    summary = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert "epochs" in summary[0] and len(summary) == 1 + 4  # 2 arms x 2 grids


def test_study_runs_the_trials_a_profile_plans_a_repeat_at_a_time(capsys, tmp_path):
    import json

    import yaml

    results = tmp_path / "results"
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({
        "common": {"data_source": "sample", "n_seeds": 4, "real_fractions": [0.3], "splits": ["slice", "subject"],
                   "results_dir": str(results), "equal_steps": True},
        "notebooks": {"04_train_cnn": {"arms": ["none"], "epochs": 1, "subject_epochs": 2, "batch_size": 32},
                      "06_train_vit": {"arch": "vit_tiny", "epochs": 3}}}))
    chosen = ["--first-seed", "1", "--seeds", "1", "--split", "subject"]
    assert cli.main(["study", "--profile", str(profile), *chosen]) == 0
    specs = [json.loads(f.read_text())["spec"] for f in (results / "cnn" / "trials").glob("*.json")]
    assert [(s["split"], s["seed"], s["epochs"], s["batch_size"]) for s in specs] == [("subject", 1, 2, 32)]
    assert profile_study(str(profile), "vit_tiny").training.epochs == 3  # 06's section names its arch
    capsys.readouterr()
    assert cli.main(["study", "--profile", str(profile), "--arch", "resnet50"]) == 2
    assert "trains no 'resnet50'" in capsys.readouterr().err
    assert cli.main(["study", "--profile", str(profile), "--epochs", "7", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "--epochs, --lr would be ignored" in err and "Traceback" not in err


def test_generate_dry_run_prices_without_a_key(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["generate", "--generator", "openai", "--data", "sample", "--fraction", "0.3", "--variants", "2",
            "--dry-run", "--bank", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing sent" in out and "136 images requested" in out  # 68 sources (30% of 223) x 2 variants


def test_report_without_results_says_what_to_run(capsys, tmp_path):
    assert cli.main(["report", "--results", str(tmp_path)]) == 2
    assert "run notebooks 04-06" in capsys.readouterr().err


def test_defaults_agree_across_layers():
    parser = cli.build_parser()
    study_args = parser.parse_args(["study"])
    defaults = ArchitectureStudy()
    assert (cli._given(study_args.seeds, "n_seeds"), cli._given(study_args.split, "splits")) == (
        defaults.n_seeds, defaults.splits)  # not given: the configs' defaults
    for option, field in [("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"),
                          ("diffusion_preset", "diffusion_preset"), ("arms", "arms"), ("fractions", "real_fractions")]:
        assert tuple(getattr(study_args, option)) == tuple(getattr(defaults, field)) if isinstance(
            getattr(defaults, field), tuple) else getattr(study_args, option) == getattr(defaults, field)
    spec = study.TrialSpec()
    assert (spec.epochs, spec.batch_size, spec.lr) == (defaults.epochs, defaults.batch_size, defaults.lr)
    assert parser.parse_args(["generate"]).diffusion_preset == GenerationConfig().diffusion_preset \
        == registry.DEFAULT_DIFFUSION_PRESET == study.TrialSpec(synthetic="diffusion", synthetic_fraction=1).generator
