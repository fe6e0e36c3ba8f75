"""What each numbered notebook calls, one module per chapter: the only modules a notebook imports.

    exploration  01: class counts, example slices, the leakage audit
    generation   02: variations of a stratified sample, cost, fidelity
    gradcam      03: Grad-CAM of real vs synthetic slices
    training     04-06: an architecture's study grid
    results      07: both evaluations side by side with the thesis's numbers, the declared contrasts
"""
