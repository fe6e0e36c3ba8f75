"""The thesis-row sweep's table and figure (issue 23, part 2), from the trial files alone.

    .venv/bin/python benchmarks/thesis_sweep_table.py [--out benchmarks/results/why]

Reads the sweep's trials (``why/thesis_row/cnn/``, made by ``benchmarks/thesis_sweep.sh``) and the recorded
thesis-budget rows (``real/thesis_budget/cnn/``). Each trial is named by the one setting it changes from the
thesis-budget setting (batch 64, lr 1e-3, 10 epochs, the protocol's validation carve, fresh weights). Per variant and
real fraction: the repeats, the median test loss (at the validation-chosen checkpoint; at the last step where there
is no validation) with its 95% order-statistic interval, the median of the own-carve validation loss where there is
one, and whether it reaches the thesis's number (within 0.05). Writes ``thesis_row.md`` and ``thesis_row.png`` /
``.pdf``; the first rows of the table come from the recorded histories (the lowest test loss over epochs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mri_synth.analysis.intervals import median_interval  # noqa: E402
from mri_synth.analysis.plots import new_figure, save_figure  # noqa: E402
from mri_synth.analysis.stats import THESIS_CNN_MEDIANS  # noqa: E402
from mri_synth.study.runner import load_results  # noqa: E402

SWEEP = ROOT / "benchmarks/results/why/thesis_row/cnn"
RECORDED = ROOT / "benchmarks/results/real/thesis_budget/cnn"
_REAL_ONLY = THESIS_CNN_MEDIANS[THESIS_CNN_MEDIANS.synthetic == "none"]
THESIS = dict(zip(_REAL_ONLY.real_fraction, _REAL_ONLY.thesis_median))  # 100%: 0.176, 30%: 0.220
REACH = 0.05
BASE = {"batch_size": 64, "lr": 1e-3, "epochs": 10, "validation": "carved", "carry": False}


def variant_of(row: pd.Series) -> str:
    """The one setting a trial changes from the thesis-budget setting (``base`` for none)."""
    changed = [f"{k}={row[k]}" for k, v in BASE.items() if k in row and row[k] != v]
    names = {"batch_size=16": "batch16", "batch_size=32": "batch32", "lr=0.0001": "lr1e-4", "epochs=30": "epochs30",
             "validation=none": "noval", "validation=own": "ownval"}
    if changed == ["validation=none", "carry=True"]:
        return "carry"
    return "+".join(names.get(c, c) for c in changed) or "base"


def recorded_rows() -> pd.DataFrame:
    """The recorded thesis-budget trials: the reported number and the lowest and last test loss over epochs."""
    history = pd.read_parquet(RECORDED / "history.parquet")
    results = pd.read_parquet(RECORDED / "results.parquet")
    loss = history[history.metric == "test_loss"].sort_values("step")
    per = loss.groupby(["policy", "seed"])["value"].agg(lowest="min", last="last")
    reported = results[results.metric == "test_loss"].set_index(["policy", "seed"])["value"].rename("reported")
    return per.join(reported).groupby("policy").median().round(3)


def sweep_table(results: pd.DataFrame) -> pd.DataFrame:
    rows = results[results.metric.isin(["test_loss", "val_loss"])]
    wide = rows.pivot_table(index=["trial_key", "real_fraction", "seed", *BASE], columns="metric",
                            values="value").reset_index()
    wide["variant"] = wide.apply(variant_of, axis=1)
    out = []
    for (variant, fraction), group in wide.groupby(["variant", "real_fraction"], sort=False):
        values = group["test_loss"].to_numpy()
        lo, hi, _ = median_interval(values)
        median = float(np.median(values))
        own = float(group["val_loss"].median()) if variant == "ownval" and "val_loss" in group else float("nan")
        closest = own if variant == "ownval" else median
        thesis = THESIS.get(round(float(fraction), 2), float("nan"))
        out.append({"variant": variant, "real_fraction": fraction, "repeats": len(values), "median test loss": median,
                    "95% interval": f"{lo:.3f}-{hi:.3f}", "median own validation loss": own, "thesis": thesis,
                    "reaches the thesis": bool(abs(closest - thesis) <= REACH)})
    return pd.DataFrame(out)


def figure(wide: pd.DataFrame):
    fig = new_figure(8, 3.6)
    ax = fig.subplots()
    at = wide[wide.real_fraction == 0.3]
    names = list(dict.fromkeys(at.variant))
    ax.boxplot([at[at.variant == v].test_loss for v in names], tick_labels=names, showfliers=False)
    for i, v in enumerate(names, start=1):
        y = at[at.variant == v].test_loss
        ax.scatter(np.full(len(y), i) + np.linspace(-0.15, 0.15, len(y)), y, s=8, color="0.4", zorder=3)
    ax.axhspan(THESIS[0.3] - REACH, THESIS[0.3] + REACH, color="tab:red", alpha=0.15,
               label=f"thesis {THESIS[0.3]:.3f} +- {REACH}")
    ax.axhline(THESIS[0.3], color="tab:red", lw=1)
    ax.set_ylabel("cross-entropy (30% real): test, or own validation")
    ax.set_title("30% real at the thesis's budget, one setting changed at a time (slice split, this CPU)")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def carry_figure(wide: pd.DataFrame):
    """The carried model's test loss after each repeat (one model, never re-initialised), per real fraction."""
    carried = wide[wide.variant == "carry"].sort_values("seed")
    fig = new_figure(8, 3.4)
    ax = fig.subplots()
    for fraction, group in carried.groupby("real_fraction"):
        label = f"{fraction:.0%} real (median over {len(group)} repeats {np.median(group.test_loss):.3f})"
        line = ax.plot(group.seed + 1, group.test_loss, marker="o", ms=3, label=label)[0]
        ax.axhline(THESIS[round(float(fraction), 2)], color=line.get_color(), lw=1, ls="--")
    ax.set_xlabel("repeats the one model has trained through (each: 10 epochs of a new stratified subset)")
    ax.set_ylabel("test cross-entropy after the repeat")
    ax.set_title("Weights carried from repeat to repeat (slice split, this CPU); dashed: the thesis's medians")
    ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default=str(SWEEP))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/why"))
    args = parser.parse_args(argv)
    lines = ["# The thesis-row sweep (issue 23, part 2)", "",
             "## The recorded thesis-budget rows, read from their histories (median over 10 repeats)", "",
             recorded_rows().to_string(), ""]
    results, _ = load_results(args.sweep) if Path(args.sweep).exists() else (pd.DataFrame(), None)
    if len(results):
        table = sweep_table(results)
        lines += ["## The sweep: 30% real (and 100% real where run), one setting changed at a time", "",
                  table.to_string(index=False, float_format=lambda x: f"{x:.3f}"), ""]
        wide = results[results.metric == "test_loss"].copy()
        wide["test_loss"] = wide["value"]
        wide["variant"] = wide.apply(variant_of, axis=1)
        # the own-carve variant's literal "validation loss" beside its test loss: the number the thesis may report
        own = results[(results.metric == "val_loss")].copy()
        own["variant"] = own.apply(variant_of, axis=1)
        own = own[own.variant == "ownval"].assign(test_loss=lambda t: t["value"], variant="ownval\n(its own val loss)")
        save_figure(figure(pd.concat([wide, own], ignore_index=True)), "thesis_row", args.out)
        if (wide.variant == "carry").any():
            save_figure(carry_figure(wide), "thesis_row_carry", args.out)
    text = "\n".join(lines)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "thesis_row.md").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
