"""The data layer: the dataset's types, its sources, the decode cache, sampling, people recovered from the pixels,
and the leakage audit.

    types      CLASS_NAMES, IMAGE_SIZE, Split, MRIData: a leaf every layer reads
    sources    the bundled sample, hub ids, hub-layout folders, Kaggle image folders; fingerprints; export
    cache      load_data: a source's splits decoded once and cached on disk
    sampling   stratified, deterministic, nested samples
    subjects   each slice's person, recovered from the pixels
    audit      how much of the source's test split is recall of people seen in training

Import from the modules (``from mri_synth.data.cache import load_data``): this package imports nothing, so reading
the class names never loads the decoders.
"""
