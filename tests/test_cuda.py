"""What only a CUDA device can show: training there, stacked training there, the runner stacking there by default.

Every test is marked ``cuda`` and skipped without a device (``benchmarks/gpu_check.sh`` runs them on a GPU machine).
Stacked vs lone on CUDA is compared in fp32 with TF32 off, so the gaps are the CPU test's kind (summation order).
"""

import json

import numpy as np
import pytest
import torch

from mri_synth.study import runner as R
from mri_synth.study import trial
from mri_synth.study import trials as S
from mri_synth.training.fit import fit
from mri_synth.training.models import tiny_model
from mri_synth.training.settings import TrainConfig
from mri_synth.training.stacked import StackedTrial, fit_stacked, trial_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine: "
                                 "bash benchmarks/gpu_check.sh)")]


@pytest.fixture(autouse=True)
def no_tf32():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("name", ["cnn", "resnet18", "vit"])
def test_fit_trains_on_cuda_in_bf16(sample_data, name):
    spec = tiny_model(name)[1]
    test = sample_data.test.subset(range(32))
    result = fit(name, sample_data.train.images, sample_data.train.labels, test.images, test.labels,
                 TrainConfig(max_steps=4, batch_size=16, device="cuda", progress=False), spec=spec, pretrained=False)
    assert next(result.model.parameters()).is_cuda and result.optimizer_steps == 4
    assert np.isfinite(result.history["test_loss"]).all()


def test_stacked_models_match_their_lone_runs_on_cuda(sample_data):
    spec = tiny_model("cnn")[1]
    test, validation = sample_data.test.subset(range(32)), sample_data.test.subset(range(32, 65))
    train = sample_data.train
    trials = [StackedTrial(train.images[a:b], train.labels[a:b], seed=s, augment=p)
              for s, (a, b, p) in enumerate([(0, 40, "autoaugment"), (40, 96, "basic"), (96, 168, "none")])]
    config = TrainConfig(max_steps=8, batch_size=16, device="cuda", precision="fp32", progress=False)
    kwargs = dict(spec=spec, pretrained=False, validation=(validation.images, validation.labels))
    stacked = fit_stacked("cnn", trials, test.images, test.labels, config, **kwargs)
    for alone, many in zip(trials, stacked):
        one = fit("cnn", alone.train_images, alone.train_labels, test.images, test.labels, trial_config(config, alone),
                  **kwargs)
        assert many.history["step"].tolist() == one.history["step"].tolist() and many.best_step == one.best_step
        np.testing.assert_allclose(many.history["test_loss"], one.history["test_loss"], atol=1e-4)


def test_the_runner_stacks_on_cuda_by_default(sample_data, tmp_path):
    context = trial.StudyContext(data=sample_data, device="cuda", bank_root=tmp_path / "bank",
                             generator_root=tmp_path / "generators")
    specs = S.study_grid(["cnn"], [1.0, 0.3], ["none", "repeat"], range(2), epochs=1, equal_steps=True,
                         batch_size=32, input_size=32, precision="fp32")
    stacked, _ = R.run_study(specs, context, tmp_path / "stacked", progress=False)
    alone, _ = R.run_study(specs, context, tmp_path / "alone", progress=False, stack=False)
    stored = json.loads((tmp_path / "stacked" / "trials" / f"{specs[0].key}.json").read_text())
    assert stored["provenance"]["stacked"] == len(specs)
    keep = ~alone.metric.str.endswith("_time_s")
    np.testing.assert_allclose(stacked.value[keep], alone.value[keep], atol=1e-3, equal_nan=True)
