"""The training engine: models, augmentation, one loop for every architecture, its settings, evaluation,
checkpoints, stacked training, Grad-CAM of a trained model, and the reference classifier.

    settings     TrainSettings (declared once) and TrainConfig, what ``fit`` takes
    models       the registry: an architecture is a name
    augment      augmentation policies, an independent draw per image on the device
    fit          the training loop
    evaluation   predictions and the four-way metrics
    readouts     the dementia readouts of people never seen
    checkpoints  a run's history and its checkpoint, chosen on validation
    stacked      K models of one architecture in one step (vmap)
    classifier   the reference classifier of the Grad-CAM and fidelity checks, trained once and cached
    gradcam      class activation maps of a trained model (pytorch-grad-cam)
    heap         the process-wide heap setting that makes CPU steps faster

Uses ``mri_synth.data``; knows nothing of trials, generators or results tables.
"""
