"""The study: the evaluation protocol (slice / subject), trial specs and the synthetic-mix policy, one trial, the
resumable runner, trials stacked on one device, Ray, and tuning the classifier on validation.

    protocol      the two evaluations: folds, validation carve, real subsets
    trials        TrialSpec (its key), arms, grids
    trial         run_trial: one trial, a pure function of its spec
    runner        a grid of trials, resumable; results tables
    trial_groups  pending trials that share a step, trained as one stack
    distributed   the same on Ray
    tuning        lr, weight decay and budget chosen on validation

Uses ``data``, ``training`` and ``synth``; the analysis reads what it writes.
"""
