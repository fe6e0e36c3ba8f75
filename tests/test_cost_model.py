"""The README's cost model: trials and generators counted from the profiles as the notebooks build them."""

import benchmark_scripts  # tests/ is on sys.path (conftest.py)


def test_thesis_profile_counts_and_totals():
    rows = {r["what"]: r for r in benchmark_scripts.load("profile_costs").profile_rows("thesis")}
    # 100 seeds x 2 evaluations (slice, subject) x (5 fractions x arms, fills skipped at 100%); one generator per
    # (evaluation, seed, fraction below 100%): the counts the README's table states
    assert {w: r["count"] for w, r in rows.items()} == {
        "cnn trials": 5400, "resnet18 trials": 4400, "vit trials": 4400, "diffusion generators (gpu)": 800}
    assert rows["vit trials"]["h100_h"] > rows["cnn trials"]["h100_h"] > 0


def test_the_script_prints_a_total_per_profile(tmp_path, capsys):
    lines = benchmark_scripts.load("profile_costs").main(["--out", str(tmp_path / "costs.txt")])
    totals = [line for line in lines if line.split()[1:2] == ["TOTAL"]]
    assert {line.split()[0] for line in totals} >= {"quick", "thesis"}
    assert all("H100(s) for a 8 h day" in line for line in totals)
    assert (tmp_path / "costs.txt").read_text().splitlines() == lines


def test_the_thesis_total_with_the_cheapest_measured_generator_swaps_only_the_generators():
    costs = benchmark_scripts.load("profile_costs")
    rows = costs.profile_rows("thesis")
    lines = costs.main([])
    [line] = [line for line in lines if line.startswith("thesis") and "latent-cpu generators" in line]
    classifiers = sum(r["h100_h"] for r in rows if r["what"].endswith("trials"))
    expected = classifiers + 800 * costs.H100_GENERATOR_S["latent-cpu"] / 3600
    assert float(line.split("->")[0].split()[-1]) == round(expected, 1)
    assert not any(line.startswith("quick") and "latent-cpu generators" in line for line in lines)  # cheap already


def test_the_thesis_total_at_fewer_repeats_scales_with_the_repeats():
    # every trial and generator belongs to one repeat: at 10 of the thesis's 100 repeats the cost is a tenth
    costs = benchmark_scripts.load("profile_costs")
    lines = costs.main(["--repeats", "10"])
    [full] = [line for line in lines if line.startswith("thesis") and "latent-cpu generators" in line]
    [fewer] = [line for line in lines if line.startswith("thesis") and "at 10 of 100 repeats" in line]
    hours = [float(line.split("->")[0].split()[-1]) for line in (full, fewer)]
    assert abs(hours[1] - hours[0] / 10) <= 0.06 and hours[1] < 10
    assert not any("repeats" in line for line in costs.main(["--repeats", "200"]))  # no row where it would add repeats


def test_full_profile_is_the_three_architectures_at_ten_paired_repeats():
    rows = {r["what"]: r for r in benchmark_scripts.load("profile_costs").profile_rows("full")}
    # 10 repeats x 2 evaluations x (100% real, 30% real, 30% + diffusion, 30% + AutoAugment) per architecture;
    # one generator per (evaluation, repeat), shared by the three architectures
    assert {w: r["count"] for w, r in rows.items()} == {
        "cnn trials": 80, "resnet18 trials": 80, "vit trials": 80, "diffusion generators (latent-cpu-fast)": 20}
    assert 0 < sum(r["h100_h"] for r in rows.values()) < 8  # one H100 within a working day
