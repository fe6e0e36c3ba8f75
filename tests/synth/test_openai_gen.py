"""The openai generator and the bank, with the real ``openai`` client against a local images server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from fake_openai_server import FakeOpenAIServer
from PIL import Image

from mri_synth.synth import GenerationError, OpenAIGenerator, SyntheticBank
from mri_synth.synth.openai_gen import DEFAULT_PROMPT, price_per_image

KEY = "sk-test-never-write-me-0123456789abcdef"
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def sources(n: int = 3):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 128, 128), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % 4
    return images, labels, [f"train/{i:05d}" for i in range(n)]


def make(server, **kw) -> OpenAIGenerator:
    kw.setdefault("price_per_image_usd", 0.01)
    return OpenAIGenerator(base_url=server.base_url, timeout=kw.pop("timeout", 5.0),
                           max_retries=kw.pop("max_retries", 2), **kw)


def assert_key_nowhere(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


def test_edit_request_and_bank_roundtrip(tmp_path):
    images, labels, ids = sources(3)
    with FakeOpenAIServer() as server:
        gen = make(server, model="gpt-image-2.5-flare", quality="low", n=2, input_size=512)
        bank = SyntheticBank(tmp_path / "bank")
        summary = bank.fill(gen, images, labels, ids, n_variants=2, seed=7, progress=False)
    assert (summary.made, summary.calls_sent, summary.refused) == (6, 3, 0)
    assert summary.cost_usd == pytest.approx(0.06)
    assert len(server.requests) == 3
    req = server.requests[0]
    assert req["path"] == "/v1/images/edits"
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    assert req["fields"]["model"] == "gpt-image-2.5-flare"
    assert req["fields"]["prompt"] == DEFAULT_PROMPT
    assert (req["fields"]["n"], req["fields"]["size"], req["fields"]["quality"]) == ("2", "1024x1024", "low")
    assert (req["image"]["format"], req["image"]["size"], req["image"]["mode"]) == ("PNG", (512, 512), "L")
    # the slice sent is the source itself, upsampled
    sent = Image.open(io.BytesIO(req["image"]["bytes"])).resize((128, 128), Image.Resampling.BOX)
    assert (torch.tensor(list(sent.getdata())).float() - images[0].flatten().float()).abs().mean() < 30

    manifest = bank.manifest()
    assert len(manifest) == 6 and set(manifest["status"]) == {"ok"}
    assert set(manifest["model"]) == {"gpt-image-2.5-flare"} and set(manifest["prompt"]) == {DEFAULT_PROMPT}
    assert manifest["cost_usd"].sum() == pytest.approx(0.06)
    assert set(manifest["seed"]) == {7}  # the API takes no seed; the run's seed is kept for provenance
    out, out_labels, syn_ids, src_ids = bank.sample(ids[:2], k=4, seed=0)
    assert out.shape == (4, 1, 128, 128) and out.dtype == torch.uint8
    assert set(src_ids) == set(ids[:2]) and sorted(src_ids) == [ids[0], ids[0], ids[1], ids[1]]
    assert out_labels.tolist() == [int(labels[ids.index(s)]) for s in src_ids]
    assert len(set(syn_ids)) == 4
    assert_key_nowhere(tmp_path)


def test_legacy_variation_endpoint(tmp_path):
    images, labels, ids = sources(1)
    with FakeOpenAIServer() as server:
        gen = make(server, model="dall-e-2", endpoint="variation", size="256x256", input_size=256)
        SyntheticBank(tmp_path).fill(gen, images, labels, ids, n_variants=1, progress=False)
    req = server.requests[0]
    assert req["path"] == "/v1/images/variations"
    assert req["fields"] == {"model": "dall-e-2", "n": "1", "size": "256x256", "response_format": "b64_json"}
    assert req["image"]["size"] == (256, 256)
    assert price_per_image("dall-e-2", "low", "256x256") == 0.016


def test_retries_with_backoff_on_429_500_and_timeout(tmp_path):
    images, labels, ids = sources(2)
    with FakeOpenAIServer(script=["429", "500", "ok", "timeout", "ok"], slow_seconds=1.5) as server:
        gen = make(server, timeout=0.5, max_retries=2)
        summary = SyntheticBank(tmp_path).fill(gen, images, labels, ids, n_variants=1, progress=False)
    assert summary.made == 2 and len(server.requests) == 5
    counts = [r["headers"].get("x-stainless-retry-count") for r in server.requests]
    assert counts == ["0", "1", "2", "0", "1"]
    gaps = [b["time"] - a["time"] for a, b in zip(server.requests, server.requests[1:3])]
    assert gaps[0] >= 0.5 * 0.75 - 0.05 and gaps[1] >= 1.0 * 0.75 - 0.05  # exponential: 0.5 s, then 1 s (-25% jitter)
    details = SyntheticBank(tmp_path).manifest()["detail"].tolist()
    assert details == ["retries=2", "retries=1"]


def test_refusal_is_recorded_and_the_run_goes_on(tmp_path):
    images, labels, ids = sources(3)
    bank = SyntheticBank(tmp_path)
    with FakeOpenAIServer(script=["ok", "refuse", "ok"]) as server:
        gen = make(server)
        summary = bank.fill(gen, images, labels, ids, n_variants=1, progress=False)
        assert (summary.made, summary.refused) == (2, 1)
        again = bank.fill(gen, images, labels, ids, n_variants=1, progress=False)
        assert again.calls_sent == 0 and len(server.requests) == 3  # a refusal is settled, not re-asked
    m = bank.manifest()
    row = m[m.source_id == ids[1]].iloc[0]
    assert row.status == "refused" and "content_policy_violation" in row.detail and row.cost_usd == 0
    with pytest.raises(ValueError, match="fill it first"):
        bank.sample(ids, k=3, seed=0)


def test_exhausted_retries_stop_and_resume_without_repeating(tmp_path):
    images, labels, ids = sources(3)
    bank = SyntheticBank(tmp_path)
    with FakeOpenAIServer(script=["ok", "500", "500"]) as server:
        gen = make(server, max_retries=1)
        with pytest.raises(GenerationError, match="run fill again to resume"):
            bank.fill(gen, images, labels, ids, n_variants=1, progress=False)
        assert bank.manifest().status.tolist() == ["ok", "error"]
        summary = bank.fill(gen, images, labels, ids, n_variants=1, progress=False)
    assert summary.already_done == 1 and summary.made == 2
    sent_ids = [r["image"]["bytes"] for r in server.requests]
    assert len(sent_ids) == 5  # 1 ok + 2 failed tries + the 2 remaining sources; the first never again
    assert_key_nowhere(tmp_path)


def test_budget_stops_before_exceeding_and_dry_run_sends_nothing(tmp_path, capsys):
    images, labels, ids = sources(5)
    bank = SyntheticBank(tmp_path)
    with FakeOpenAIServer() as server:
        gen = make(server, price_per_image_usd=0.01)
        dry = bank.fill(gen, images, labels, ids, n_variants=1, dry_run=True, progress=False)
        assert "5 calls" in capsys.readouterr().out and dry.estimated_cost_usd == pytest.approx(0.05)
        assert server.requests == []
        first = bank.fill(gen, images, labels, ids, n_variants=1, budget_usd=0.025, progress=False)
        assert first.stopped_by_budget and first.calls_sent == 2 and first.total_cost_usd == pytest.approx(0.02)
        second = bank.fill(gen, images, labels, ids, n_variants=1, budget_usd=0.025, progress=False)
        assert second.stopped_by_budget and second.calls_sent == 0  # the budget counts earlier runs
        assert len(server.requests) == 2 and bank.cost_usd() == pytest.approx(0.02)


def test_missing_key_fails_clearly_before_any_call(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    images, labels, ids = sources(1)
    with FakeOpenAIServer() as server:
        with pytest.raises(GenerationError, match="OPENAI_API_KEY is not set"):
            SyntheticBank(tmp_path).fill(make(server), images, labels, ids, n_variants=1, progress=False)
    assert server.requests == []


def test_unknown_price_asks_for_one():
    with pytest.raises(ValueError, match="price_per_image_usd"):
        OpenAIGenerator(model="some-new-model")


KILLED_RUN = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = [{here!r}, {tests!r}]  # this module, and the fake server it imports
    from test_openai_gen import make, sources
    from mri_synth.synth import SyntheticBank
    class S: base_url = {url!r}
    images, labels, ids = sources(4)
    SyntheticBank({root!r}).fill(make(S), images, labels, ids, n_variants=1, progress=False)
""")


def test_resume_after_kill_repeats_no_paid_call(tmp_path):
    images, labels, ids = sources(4)
    root = tmp_path / "bank"
    with FakeOpenAIServer(script=["ok", "ok", "hang"]) as server:
        code = KILLED_RUN.format(here=str(Path(__file__).parent), tests=str(Path(__file__).parents[1]),
                                 url=server.base_url, root=str(root))
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, env={**os.environ})
        deadline = time.monotonic() + 60
        while len(server.requests) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(server.requests) == 3, "the generation run did not reach its third call"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        bank = SyntheticBank(root)
        gen = make(server)
        resumed = bank.fill(gen, images, labels, ids, n_variants=1, progress=False)
        # the hung call may have been paid: not sent again, counted in the spend
        assert (resumed.already_done, resumed.made, resumed.interrupted) == (3, 1, 1)
        assert len(server.requests) == 4
        assert resumed.total_cost_usd == pytest.approx(0.04)
        retried = bank.fill(gen, images, labels, ids, n_variants=1, progress=False, retry_interrupted=True)
        assert retried.made == 1 and len(server.requests) == 5
    assert not list(root.rglob("*.tmp"))
    m = bank.manifest()
    assert sorted(m[m.status == "ok"].source_id) == sorted(ids)
    assert bank.sample(ids, k=4, seed=1)[0].shape == (4, 1, 128, 128)
    assert_key_nowhere(tmp_path)


def test_bad_key_stops_the_run_instead_of_refusing_every_image(tmp_path):
    images, labels, ids = sources(3)
    bank = SyntheticBank(tmp_path)
    with FakeOpenAIServer(script=["401"]) as server:
        with pytest.raises(GenerationError, match="check OPENAI_API_KEY"):
            bank.fill(make(server), images, labels, ids, n_variants=1, progress=False)
    assert len(server.requests) == 1  # 401 is not retried, and the other sources are not tried
    assert bank.manifest().status.tolist() == ["error"]  # failed, not refused: the next fill asks again
    assert_key_nowhere(tmp_path)
