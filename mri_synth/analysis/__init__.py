"""The analysis: statistics, intervals, the declared contrasts, findings and report, figures, and the fidelity of
synthetic images.

    stats              summaries with intervals, Holm, the thesis's numbers
    intervals          order-statistic, BCa and two-level intervals
    contrasts          the one function that compares arms (declared, or exploratory with its own correction)
    findings           the README's generated findings block and its check
    report             per-evaluation summaries and Figures 7.1/7.2
    plots              results figures and image grids
    synthetic_figures  real/synthetic pairs, histograms, nearest-real and label-fidelity figures
    fidelity           FD/KID, precision/recall, memorisation, label fidelity (features come from a given model)

Uses ``data`` and reads results tables; never trains (a check that needs a classifier takes a trained one).
"""
