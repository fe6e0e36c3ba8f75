"""What the locally trained generators share: the [-1, 1] round trip, seeded noise, the cache of trained weights
(keyed by what shapes them, not by how they are sampled), atomic saves, the shared config checks and presets."""

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from mri_synth.synth import trained
from mri_synth.synth.base import fingerprint_of, ids_key


def test_to_model_and_back_to_uint8():
    images = torch.tensor([0, 64, 128, 255], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 128, 128).contiguous()
    x = trained.to_model(images, 128, torch.device("cpu"))
    assert x.dtype == torch.float32 and x.shape == (4, 1, 128, 128)
    assert x[:, 0, 0, 0].tolist() == pytest.approx([-1.0, 64 / 127.5 - 1, 128 / 127.5 - 1, 1.0], abs=1e-6)
    assert torch.equal(trained.to_uint8(x), images)  # exact at the stored size
    small = trained.to_model(images, 32, torch.device("cpu"))  # area-downsampled: constant images stay constant
    assert small.shape == (4, 1, 32, 32) and torch.allclose(small, x[:, :, :32, :32])
    back = trained.to_uint8(small)
    assert back.shape == (4, 1, 128, 128) and back.dtype == torch.uint8 and torch.equal(back, images)
    assert trained.to_uint8(torch.full((1, 1, 8, 8), 3.0)).unique().tolist() == [255]  # clamped, not wrapped
    assert trained.to_uint8(torch.full((1, 1, 8, 8), -3.0)).unique().tolist() == [0]


def test_seeded_noise_is_one_draw_per_seed_whatever_the_batch():
    noise = trained.seeded_noise([5, 7, 5], (2, 4, 4))
    assert noise.shape == (3, 2, 4, 4) and torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert torch.equal(trained.seeded_noise([7], (2, 4, 4))[0], noise[1])
    assert torch.equal(noise[1], torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(7)))


def test_cpu_threads_inside_a_block_then_as_before():
    before = torch.get_num_threads()
    with trained.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with trained.cpu_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(KeyError), trained.cpu_threads(1):
        raise KeyError("boom")
    assert torch.get_num_threads() == before


def test_the_cache_folder_is_keyed_by_name_settings_ids_and_seed(tmp_path, monkeypatch):
    ids = ["train/1", "train/2"]
    folder = trained.cache_folder("latent", {"steps": 3}, ids, 0, tmp_path)
    expected = fingerprint_of("latent", {"config": {"steps": 3}, "train_ids_sha256": ids_key(ids), "seed": 0})
    assert folder == tmp_path / expected and folder.name.startswith("latent-")
    assert trained.cache_folder("latent", {"steps": 3}, ids[::-1], 0, tmp_path) == folder  # ids are a set
    others = [trained.cache_folder("latent", {"steps": 4}, ids, 0, tmp_path),
              trained.cache_folder("latent", {"steps": 3}, ids[:1], 0, tmp_path),
              trained.cache_folder("latent", {"steps": 3}, ids, 1, tmp_path),
              trained.cache_folder("diffusion", {"steps": 3}, ids, 0, tmp_path)]
    assert len({folder, *others}) == 5
    monkeypatch.setenv("MRI_SYNTH_CACHE", str(tmp_path / "cache"))
    assert trained.cache_folder("latent", {"steps": 3}, ids, 0, None) == tmp_path / "cache" / "latent" / expected


def test_an_atomic_folder_replaces_the_old_one_or_leaves_it_whole(tmp_path):
    target = tmp_path / "gen"
    with trained.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
        assert not target.exists() and tmp.name.startswith(".gen.") and tmp.name.endswith(".tmp")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError, match="killed"), trained.atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
    with trained.atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced, not merged


@dataclass(frozen=True)
class Settings:
    strength: float = 0.5
    train_max_strength: float = 0.8
    ema_decay: float = 0.99
    sampler: str = "ddim"
    ddim_steps: int = 10
    timesteps: int = 100
    beta_schedule: str = "linear"
    width: int = 8  # shapes the weights

    @classmethod
    def toy(cls, **overrides):
        return replace(cls(width=2), **overrides)

    @classmethod
    def cpu_fast(cls, **overrides):
        return replace(cls(ddim_steps=4), **overrides)


@pytest.mark.parametrize("bad, message", [
    (dict(strength=0.0), r"strength must be in \(0, 1\], got 0.0"),
    (dict(strength=0.9), "strength 0.9 exceeds train_max_strength 0.8: the model would denoise from noise levels it "
                         "never learned; raise train_max_strength"),
    (dict(train_max_strength=1.5), r"train_max_strength must be in \(0, 1\], got 1.5"),
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\), got 1.0"),
    (dict(sampler="euler"), r"sampler must be one of \('ddim', 'dpm\+\+', 'unipc'\), got 'euler'"),
])
def test_the_shared_sdedit_checks(bad, message):
    trained.check_sdedit_settings(Settings())
    with pytest.raises(ValueError, match=message):
        trained.check_sdedit_settings(Settings(**bad))


def test_presets_by_name_with_overrides_and_errors_naming_the_choices():
    assert trained.pick_preset(Settings, ("toy", "cpu-fast"), "test", "toy", {}) == Settings(width=2)
    assert trained.pick_preset(Settings, ("toy",), "test", "toy", {"strength": 0.3}).strength == 0.3
    assert trained.pick_preset(Settings, ("toy", "cpu-fast"), "test", "cpu-fast", {}).ddim_steps == 4
    with pytest.raises(ValueError, match=r"test preset must be one of \('toy',\), got 'huge'"):
        trained.pick_preset(Settings, ("toy",), "test", "huge", {})
    with pytest.raises(ValueError, match="the test preset 'toy' has no setting image_size; its settings: strength"):
        trained.pick_preset(Settings, ("toy",), "test", "toy", {"image_size": 32})


def test_only_the_settings_that_shape_the_weights_key_the_cache():
    assert set(trained.SAMPLING_FIELDS) >= {"strength", "sampler", "ddim_steps"}
    weights = trained.training_settings(Settings())
    assert "width" in weights and not set(weights) & set(trained.SAMPLING_FIELDS)
    assert trained.training_settings(Settings(strength=0.3, sampler="unipc", ddim_steps=20)) == weights
    assert trained.training_settings(Settings(width=4)) != weights


@pytest.mark.parametrize("sampler", trained.SAMPLERS)
def test_sdedit_runs_the_last_share_of_the_steps(sampler):
    config = Settings(sampler=sampler, ddim_steps=10)
    scheduler, steps = trained.sdedit_schedule(config, 0.3)
    assert len(steps) == 3 and list(steps) == sorted(steps, reverse=True) and int(steps[-1]) < 20
    assert len(trained.sdedit_schedule(config, 1.0)[1]) == 10
    assert len(trained.sdedit_schedule(config, 0.01)[1]) == 1  # at least one step


class FakeGenerator:
    """Counts trainings; saves and loads a JSON file, as a generator class does."""

    name = "fake"
    training_version = 1
    trainings: list[int] = []

    def __init__(self, config, device=None, cpu_threads=None):
        self.config = config

    def train(self, images, labels, ids, *, seed, progress):
        FakeGenerator.trainings.append(seed)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "generator.json").write_text(json.dumps({"width": self.config.width}))

    @classmethod
    def load(cls, folder: Path, device=None, cpu_threads=None):
        return cls(Settings(width=json.loads((folder / "generator.json").read_text())["width"], strength=0.1))


def test_load_or_train_trains_once_and_samples_with_the_callers_settings(tmp_path):
    FakeGenerator.trainings = []
    images, labels, ids = torch.zeros(2, 1, 128, 128, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"]
    kwargs = dict(seed=3, cache_root=tmp_path, device="cpu", cpu_threads=None, progress=False)
    first = trained.load_or_train(FakeGenerator, Settings(), images, labels, ids, **kwargs)
    assert FakeGenerator.trainings == [3] and first.from_cache is False
    again = trained.load_or_train(FakeGenerator, Settings(strength=0.7, sampler="unipc"), images, labels, ids, **kwargs)
    assert FakeGenerator.trainings == [3] and again.from_cache is True  # another sampling: the same weights
    assert (again.config.strength, again.config.sampler) == (0.7, "unipc")
    trained.load_or_train(FakeGenerator, Settings(width=4), images, labels, ids, **kwargs)
    assert FakeGenerator.trainings == [3, 3]  # another width shapes other weights
    [folder] = [p for p in tmp_path.iterdir() if json.loads((p / "generator.json").read_text())["width"] == 8]
    (folder / "generator.json").write_text("{broken")
    with pytest.warns(UserWarning, match=f"the cached fake generator {folder} cannot be read .*training it again"):
        trained.load_or_train(FakeGenerator, Settings(), images, labels, ids, **kwargs)
    assert FakeGenerator.trainings == [3, 3, 3] and json.loads((folder / "generator.json").read_text())["width"] == 8


def test_provenance_names_the_device_torch_and_commit():
    record = trained.provenance(torch.device("cpu"))
    assert set(record) == {"device", "torch", "commit", "clean", "trained_at"}
    assert record["device"].startswith("cpu: ") and record["torch"] == torch.__version__
    assert record["commit"] == "" or len(record["commit"]) == 40
    assert isinstance(record["clean"], bool) and record["trained_at"].endswith("Z")
