"""The README's findings block: generated from the recorded tables, with verdicts that follow the paired data."""

import numpy as np
import pandas as pd
import pytest

from mri_synth import cli
from mri_synth.analysis import findings
from mri_synth.paths import PROJECT_ROOT
from mri_synth.study import trials as S

ARMS = {"100% real": dict(real_fraction=1.0), "30% real": dict(real_fraction=0.3),
        "30% real + 70% repeat": dict(real_fraction=0.3, synthetic="repeat", synthetic_fraction=0.7)}


def results_table(effects: dict[str, dict[str, float]], seeds: int = 10) -> pd.DataFrame:
    """Each evaluation's primary readout per arm and repeat: a repeat-level offset shared by the arms (pairing)
    plus the arm's effect plus a little noise."""
    rng = np.random.default_rng(0)
    rows = []
    for split, metric in (("slice", "test_loss"), ("subject", "dementia_auc_person")):
        base = rng.normal(0.5, 0.05, seeds)
        for policy, effect in effects[split].items():
            for seed in range(seeds):
                columns = S.TrialSpec(split=split, seed=seed, **ARMS[policy]).table_columns()
                assert columns["policy"] == policy
                rows.append({**columns, "metric": metric, "value": base[seed] + effect + rng.normal(0, 0.002)})
    return pd.DataFrame(rows)


FAMILY = ["30% real + 70% repeat vs 30% real", "30% real + 70% repeat vs 100% real",
          "30% real + 70% diffusion vs 30% real"]


def test_verdicts_follow_the_paired_differences_and_missing_arms_are_named():
    table = results_table({"slice": {"100% real": -0.2, "30% real": 0.0, "30% real + 70% repeat": -0.1},
                           "subject": {"100% real": 0.0, "30% real": 0.0, "30% real + 70% repeat": 0.0}})
    block = findings.findings_block(table, FAMILY)
    slice_part, subject_part = block.split("**subject evaluation**")
    # slice: loss lower is better; repeat beats 30% real, 100% real beats repeat (10 of 10 pairs each way)
    assert "- 30% real + 70% repeat vs 30% real: -0.100" in slice_part
    assert "**30% real + 70% repeat** is better (Holm p = " in slice_part
    assert "**100% real** is better (Holm p = " in slice_part
    # subject: no effect built in, so no difference is claimed
    assert subject_part.count("no difference detected with 10 paired repeats") == 2
    assert "** is better" not in subject_part
    # the contrast whose arm has not run is listed, in both evaluations, as not run yet
    assert block.count("30% real + 70% diffusion vs 30% real: not run yet (30% real + 70% diffusion)") == 2
    # the thesis's medians stand beside the slice rows only (100% real: 0.1760 in the thesis)
    assert "| 100% real | 10 |" in slice_part and "| 0.176 |" in slice_part
    assert "thesis median" not in subject_part


def test_the_block_is_written_between_the_markers_and_refused_without_them(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{findings.START}\nold\n{findings.END}\n\nafter\n")
    assert findings.write_block(readme, "new block\n")
    assert findings.read_block(readme) == "new block\n"
    assert readme.read_text().endswith("after\n") and readme.read_text().startswith("# title")
    assert not findings.write_block(readme, "new block\n")  # unchanged: not rewritten
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no findings markers for cnn: add the lines"):
        findings.write_block(plain, "x\n")


def test_the_superseded_real_grid_keeps_its_block_beside_its_trials():
    # the numbers are never typed in: this regenerates them from benchmarks/results/real/results
    assert cli.main(["findings", "--profile", "real", "--check"]) == 0
    block = findings.read_block(PROJECT_ROOT / "benchmarks/results/real/README.md")
    assert block.startswith("Recorded: ") and "planned cnn trials" in block
    assert "The thesis's epoch budget" in block  # the real profile's thesis-budget rows come with it


def test_the_readme_opens_with_the_rerun_blocks_of_every_architecture_it_names():
    # the project's README shows the study's current answer: the rerun's blocks, the same as beside its trials
    readme = PROJECT_ROOT / "README.md"
    assert cli.main(["findings", "--check"]) == 0  # the defaults: profile rerun, the project's README
    rerun_readme = PROJECT_ROOT / "benchmarks/results/rerun/README.md"
    for arch in ("cnn", "resnet18", "vit_tiny"):  # vit_tiny: empty until its first repeat, markers in both
        block = findings.read_block(readme, arch)
        assert block is not None and block == findings.read_block(rerun_readme, arch)
    assert "Declared diagnostic contrasts" in findings.read_block(readme)


def test_the_rerun_block_matches_its_trials_and_lists_the_diagnostics():
    # benchmarks/rerun.sh regenerates it with every repeat it commits
    readme = PROJECT_ROOT / "benchmarks/results/rerun/README.md"
    assert cli.main(["findings", "--profile", "rerun", "--readme", str(readme), "--check"]) == 0
    block = findings.read_block(readme)
    assert "Declared diagnostic contrasts" in block and "reconstruct_own vs 30% real + 70% repeat" in block


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny"])
def test_the_rerun_block_of_each_architecture_matches_its_trials_and_says_from_scratch(arch):
    readme = PROJECT_ROOT / "benchmarks/results/rerun/README.md"
    results = PROJECT_ROOT / "benchmarks/results/rerun/results" / arch
    assert cli.main(["findings", "--profile", "rerun", "--arch", arch, "--results", str(results),
                     "--readme", str(readme), "--check"]) == 0
    assert "from scratch, not the thesis's ImageNet-pretrained setting" in findings.read_block(readme, arch)
    assert "from scratch" not in findings.read_block(readme)  # the basic CNN has no pretrained setting to deny


def test_check_fails_when_the_block_is_stale(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{findings.START}\nRecorded: 0 of 140 planned cnn trials.\n{findings.END}\n")
    assert cli.main(["findings", "--profile", "real", "--readme", str(readme), "--check"]) == 2
    assert "differs from what" in capsys.readouterr().err
    assert cli.main(["findings", "--profile", "real", "--readme", str(readme)]) == 0
    assert cli.main(["findings", "--profile", "real", "--readme", str(readme), "--check"]) == 0


def test_thesis_budget_rows_stand_beside_the_thesis_medians_and_missing_arms_are_named():
    table = results_table({"slice": {"100% real": 0.0, "30% real": 0.2, "30% real + 70% repeat": 0.1},
                           "subject": {"100% real": 0.0}}, seeds=4)
    block = findings.thesis_budget_block(table)
    assert "(slice evaluation, 10 epochs of each arm's own images" in block  # TrialSpec's default budget
    assert "| 100% real | 4 |" in block and block.count("| 0.176 |") == 1 and "| 0.220 |" in block
    assert "| 30% real + 70% diffusion | 0 | not run yet | 0.174 |" in block
    median = table[(table.policy == "30% real") & (table.split == "slice")].value.median()
    assert f"| 30% real | 4 | {median:.3f} [" in block  # the slice rows only: subject's 100% real is not mixed in
    assert findings.thesis_budget_block(pd.DataFrame()).count("not run yet") == 4


def test_thesis_budget_contrasts_are_paired_and_labelled_exploratory():
    arms = {**ARMS, "30% real + 70% diffusion": dict(real_fraction=0.3, synthetic="diffusion", synthetic_fraction=0.7)}
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.05, 10)
    effects = {"100% real": -0.3, "30% real": 0.2, "30% real + 70% repeat": 0.0, "30% real + 70% diffusion": 0.05}
    rows = [{**S.TrialSpec(split="slice", seed=seed, **arms[policy]).table_columns(), "metric": "test_loss",
             "value": base[seed] + effect + rng.normal(0, 0.0002)}
            for policy, effect in effects.items() for seed in range(10)]
    block = findings.thesis_budget_block(pd.DataFrame(rows))
    assert "Holm over 2). They are not in the profile's declared family" in block and "exploratory" in block
    # diffusion is 0.05 worse than its control (repeat) and 0.15 better than 30% real, in every pair
    assert "- 30% real + 70% diffusion vs 30% real + 70% repeat: +0.050 [" in block
    assert "**30% real + 70% repeat** is better (Holm p = " in block
    assert "- 30% real + 70% diffusion vs 30% real: -0.150 [" in block
    assert "**30% real + 70% diffusion** is better (Holm p = " in block
    # one paired repeat is no contrast: the rows stand alone
    one = pd.DataFrame([r for r in rows if r["seed"] < 1 or r["policy"] != "30% real + 70% diffusion"])
    assert "Paired contrasts" not in findings.thesis_budget_block(one)
    # without the repeat arm only the contrast with 30% real is run, and Holm corrects over that one
    no_repeat = findings.thesis_budget_block(pd.DataFrame([r for r in rows if r["policy"] != "30% real + 70% repeat"]))
    assert "Holm over 1)" in no_repeat and "vs 30% real + 70% repeat" not in no_repeat


def test_diagnostics_are_a_family_of_their_own_after_the_declared_one():
    table = results_table({"slice": {"100% real": -0.2, "30% real": 0.0, "30% real + 70% repeat": -0.1},
                           "subject": {"100% real": 0.0, "30% real": 0.0, "30% real + 70% repeat": 0.0}})
    diagnostics = ["30% real + 70% repeat vs 100% real", "30% real + 70% reconstruct_own vs 30% real + 70% repeat"]
    block = findings.findings_block(table, FAMILY[:1], diagnostics=diagnostics)
    slice_part = block.split("**subject evaluation**")[0]
    declared, diagnostic = slice_part.split("Declared diagnostic contrasts")
    assert "Holm over 1)" in declared and "Holm over 2)" in diagnostic  # corrected over its own family only
    assert "- 30% real + 70% repeat vs 100% real: +0.10" in diagnostic
    assert "reconstruct_own vs 30% real + 70% repeat: not run yet (30% real + 70% reconstruct_own)" in diagnostic
    # the subject evaluation's test is named with its interval
    assert "corrected t interval; corrected resampled t (Nadeau-Bengio, 5 person folds) test" in block
    assert "would have been detected 80% of the time" in block.split("**subject evaluation**")[1]


def test_too_few_repeats_say_no_test_can_reach_the_level_instead_of_a_detectable_difference():
    table = results_table({"slice": {"100% real": -0.2, "30% real": 0.0, "30% real + 70% repeat": -0.1},
                           "subject": {"100% real": 0.0, "30% real": 0.0, "30% real + 70% repeat": 0.0}}, seeds=3)
    slice_part = findings.findings_block(table, FAMILY).split("**subject evaluation**")[0]
    assert "the exact signed-rank test cannot reach p < 0.05" in slice_part
    assert "would have been detected" not in slice_part


def test_one_repeat_gives_its_difference_and_says_there_is_no_interval_yet():
    table = results_table({"slice": {"100% real": -0.2, "30% real": 0.0, "30% real + 70% repeat": -0.1},
                           "subject": {"100% real": 0.0, "30% real": 0.0, "30% real + 70% repeat": 0.05}}, seeds=1)
    block = findings.findings_block(table, FAMILY[:1])
    assert "nan" not in block
    assert "- 30% real + 70% repeat vs 30% real: -0.10" in block  # slice: the difference stands alone
    assert "(no interval from 1 paired repeat);" in block
    assert "no difference detected with 1 paired repeat (" in block and "1 paired repeats" not in block


def test_each_architecture_has_its_own_block_and_lists_only_the_contrasts_its_grid_plans(tmp_path):
    import json

    trials = tmp_path / "results" / "trials"
    trials.mkdir(parents=True)
    for path in sorted((PROJECT_ROOT / "benchmarks/results/rerun/results/cnn/trials").glob("*.json")):
        trial = json.loads(path.read_text())
        if trial["spec"]["split"] == "slice" and trial["spec"]["seed"] == 0:  # one repeat, made a resnet18 one
            trial["spec"]["arch"] = "resnet18"
            (trials / path.name).write_text(json.dumps(trial))
    start, end = findings.markers("resnet18")
    assert "resnet18" in start and "resnet18" in end and findings.markers("cnn") == (findings.START, findings.END)
    readme = tmp_path / "README.md"
    readme.write_text(f"{findings.START}\ncnn block\n{findings.END}\n\n{start}\nold\n{end}\n")
    assert cli.main(["findings", "--profile", "rerun", "--arch", "resnet18", "--results", str(tmp_path / "results"),
                     "--readme", str(readme)]) == 0
    block = findings.read_block(readme, "resnet18")
    assert findings.read_block(readme) == "cnn block\n"  # the CNN's block is left alone
    assert "planned resnet18 trials" in block and "| 30% real + 70% diffusion | 1 |" in block
    assert "planned resnet18 trials, from scratch, not the thesis's ImageNet-pretrained setting;" in block
    # the rerun declares the reconstruction diagnostics for the CNN's grid only: no "not run yet" lines for them here
    assert "Declared contrasts" in block and "diagnostic" not in block
    assert cli.main(["findings", "--profile", "rerun", "--arch", "resnet18", "--results", str(tmp_path / "results"),
                     "--readme", str(readme), "--check"]) == 0


def _machines(where: dict[tuple[str, int, str], str]) -> pd.DataFrame:
    """``runner.trial_machines``'s table: (split, seed, policy) -> processor, torch 2.14.1."""
    return pd.DataFrame([{"arch": "vit_tiny", "split": split, "seed": seed, "policy": policy, "machine": machine,
                          "torch": "2.14.1"} for (split, seed, policy), machine in where.items()])


def test_where_the_trials_ran_is_stated_by_repeat_and_a_repeat_on_two_machines_is_named():
    arms = ("30% real", "30% real + 70% diffusion")
    one = _machines({("slice", seed, arm): "AMD EPYC" for seed in range(3) for arm in arms})
    assert findings.machines_line(one, "vit_tiny") == "Where they ran: every trial on AMD EPYC (torch 2.14.1).\n"
    assert findings.machines_line(one, "resnet18") == findings.machines_line(one.assign(machine=""), "vit_tiny") == ""
    by_repeat = _machines({("slice", seed, arm): "AMD EPYC" if seed in (0, 1, 2, 5) else "Intel Xeon"
                           for seed in range(7) for arm in arms}
                          | {("subject", seed, arm): "Intel Xeon" for seed in (8, 9) for arm in arms})
    assert findings.mixed_repeats(by_repeat, "vit_tiny") == []
    assert findings.machines_line(by_repeat, "vit_tiny") == (
        "Where they ran (a contrast pairs the arms of one repeat; each repeat's arms ran on one machine): slice "
        "repeats 0-2, 5 on AMD EPYC (torch 2.14.1) and 3-4, 6 on Intel Xeon (torch 2.14.1); subject repeats 8-9 on "
        "Intel Xeon (torch 2.14.1).\n")
    split_repeat = by_repeat.copy()
    split_repeat.loc[(split_repeat.seed == 3) & (split_repeat.policy == arms[0]), "machine"] = "AMD EPYC"
    assert findings.mixed_repeats(split_repeat, "vit_tiny") == ["slice repeat 3"]
    line = findings.machines_line(split_repeat, "vit_tiny")
    assert "the arms of slice repeat 3 ran on several machines, so those pairs mix machines" in line
    assert "3-4" not in line and "4, 6 on Intel Xeon" in line
