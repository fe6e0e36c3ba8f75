"""The reference classifier: trained once per (data, recipe) on the real training split, then read from the cache."""

import json

import pytest
import torch

from mri_synth.training import classifier
from mri_synth.training.classifier import ClassifierRecipe, real_classifier

RECIPE = ClassifierRecipe(input_size=32, epochs=1, batch_size=16, device="cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "classifier"


@pytest.fixture
def counted_fit(monkeypatch):
    """Counts the trainings ``real_classifier`` starts."""
    calls = []
    real_fit = classifier.fit

    def fit(*args, **kwargs):
        calls.append(args[5])  # the TrainConfig
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(classifier, "fit", fit)
    return calls


def test_the_recipe_carries_the_model_and_its_input_size():
    assert ClassifierRecipe().spec.input_size == 128 and ClassifierRecipe().model_name == "cnn"
    assert RECIPE.spec.input_size == 32 and RECIPE.spec.name == "cnn"
    with pytest.raises(ValueError, match="alexnet9"):
        ClassifierRecipe(model_name="alexnet9").spec


def test_trained_once_then_read_from_the_cache(synthetic_people, cache, counted_fit):
    data, _, _ = synthetic_people([12, 12, 12, 12])
    model, spec, history = real_classifier(data, RECIPE)
    assert not model.training and next(model.parameters()).device.type == "cpu" and spec.input_size == 32
    assert len(history) == 1 and history.step.tolist() == [3]  # 36 training slices in batches of 16
    [config] = counted_fit
    assert (config.epochs, config.batch_size, config.seed, config.device, config.progress) == (1, 16, 0, "cpu", False)
    [folder] = cache.iterdir()
    assert folder.name.startswith("cnn-") and len(folder.name) == len("cnn-") + 16
    assert sorted(p.name for p in folder.iterdir()) == ["history.json", "weights.pt"]
    assert json.loads((folder / "history.json").read_text())["step"] == [3]
    stored = torch.load(folder / "weights.pt", weights_only=True)
    assert all(v.dtype == torch.float32 or not v.is_floating_point() for v in stored.values())

    again, _, history_again = real_classifier(data, RECIPE)
    assert len(counted_fit) == 1  # read, not trained again
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert history_again.step.tolist() == [3]


def test_the_cache_key_is_the_data_and_the_recipe_but_not_the_device(synthetic_people, cache, counted_fit):
    data, _, _ = synthetic_people([8, 8, 8, 8])
    real_classifier(data, RECIPE)
    real_classifier(data, ClassifierRecipe(input_size=32, epochs=1, batch_size=16, device="auto"))
    assert len(counted_fit) == 1 and len(list(cache.iterdir())) == 1  # where it trains does not change the model
    real_classifier(data, ClassifierRecipe(input_size=32, epochs=1, batch_size=16, device="cpu", seed=1))
    real_classifier(data, ClassifierRecipe(input_size=32, epochs=1, batch_size=16, device="cpu", lr=3e-4))
    other, _, _ = synthetic_people([8, 8, 8, 8], seed=1)  # other images: another fingerprint
    real_classifier(other, RECIPE)
    assert len(counted_fit) == 4 and len(list(cache.iterdir())) == 4


def test_an_unreadable_cache_is_trained_again_with_a_warning(synthetic_people, cache, counted_fit):
    data, _, _ = synthetic_people([8, 8, 8, 8])
    model, _, _ = real_classifier(data, RECIPE)
    [folder] = cache.iterdir()
    (folder / "weights.pt").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match=f"(?s)cached classifier in {folder} cannot be read.*training it again"):
        again, _, _ = real_classifier(data, RECIPE)
    assert len(counted_fit) == 2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))  # seeded
    assert torch.load(folder / "weights.pt", weights_only=True)  # the cache is whole again
