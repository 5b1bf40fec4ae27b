"""Held-out evaluation of a bundle (drirl.reward.evaluate) and its heatmap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_reward_support import CATEGORIES, one_torch_thread, shared_bundle, shared_data, shared_root, write_data

from drirl.errors import DataError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def lora_bundle(tmp_path_factory, tiny_lm_path) -> Path:
    return shared_bundle(tmp_path_factory, tiny_lm_path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return shared_root(tmp_path_factory) / "eval-negatives"


def test_evaluate_per_category_bundle(lora_bundle, cache, tmp_path_factory):
    from drirl.reward.bundle import CategoryRewardModels
    from drirl.reward.evaluate import evaluate_bundle

    result = evaluate_bundle(lora_bundle, negatives_per_prompt=2, negatives_cache=cache, bf16=False)
    assert result["data"] == str(shared_data(tmp_path_factory))  # default: the file the bundle was trained on
    assert result["categories"] == sorted(CATEGORIES) and result["models"] == sorted(CATEGORIES)
    assert result["pairs"] == {c: 4 for c in CATEGORIES}  # 2 test prompts x 2 samples
    for category, accuracy in result["pairwise_accuracy"].items():
        assert 0.0 <= accuracy <= 1.0
        assert accuracy == result["cross_category"][category][category]
    assert result["mean_pairwise_accuracy"] == pytest.approx(sum(result["pairwise_accuracy"].values()) / 3)
    assert set(result["cross_category"]) == set(CATEGORIES)
    assert all(set(row) == set(CATEGORIES) for row in result["cross_category"].values())

    # Recompute one cell by hand: the insult model on the crime pairs.
    from drirl.data.schema import read_examples
    from drirl.generation import GenerationSettings
    from drirl.reward.bundle import read_manifest
    from drirl.reward.negatives import sample_negatives

    manifest = read_manifest(lora_bundle)
    crime = [e for e in read_examples(shared_data(tmp_path_factory)) if e.split == "test" and e.category == "crime"]
    settings = GenerationSettings(**{**manifest["generation"], "num_return_sequences": 2})
    samples = sample_negatives(manifest["policy"], crime, settings, cache_root=cache)
    models = CategoryRewardModels(lora_bundle, bf16=False)
    wins = [models.score_with("insult", [e.prompt], [e.demonstration])[0]
            > models.score_with("insult", [e.prompt], [s])[0] for e in crime for s in samples[e.id]]
    assert result["cross_category"]["insult"]["crime"] == pytest.approx(sum(wins) / len(wins))


def test_evaluate_single_model_bundle_is_one_row(tmp_path_factory, tiny_lm_path, cache):
    from drirl.reward.evaluate import evaluate_bundle

    bundle = shared_bundle(tmp_path_factory, tiny_lm_path, per_category=False)
    result = evaluate_bundle(bundle, negatives_cache=cache, bf16=False)
    assert list(result["cross_category"]) == ["all"]
    assert list(result["cross_category"]["all"]) == sorted(CATEGORIES)  # 1 x n
    assert result["pairwise_accuracy"] == result["cross_category"]["all"]


def test_evaluate_reuses_cached_samples(lora_bundle, cache, monkeypatch):
    from drirl.reward import negatives
    from drirl.reward.evaluate import evaluate_bundle

    evaluate_bundle(lora_bundle, negatives_cache=cache, bf16=False)
    monkeypatch.setattr(negatives, "_generate", lambda *a, **k: pytest.fail("sampled again"))
    again = evaluate_bundle(lora_bundle, negatives_cache=cache, bf16=False)
    assert set(again["pairwise_accuracy"]) == set(CATEGORIES)


def test_evaluate_needs_test_examples(lora_bundle, tmp_path, cache):
    from drirl.reward.evaluate import evaluate_bundle

    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    with pytest.raises(DataError, match="no test-split examples"):
        evaluate_bundle(lora_bundle, data=data, negatives_cache=cache, bf16=False)


def test_plot_heatmap_is_written_atomically(tmp_path, monkeypatch):
    import os

    from drirl.plots import plot_heatmap

    matrix = {"crime": {"crime": 0.9, "insult": 0.4}, "insult": {"crime": math.nan, "insult": 0.8}}
    out = plot_heatmap(matrix, ["crime", "insult"], tmp_path / "sub" / "cross.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["cross.png"]  # no temporary file left behind

    # A failure while rendering leaves the previous file untouched and no temporary file.
    before = out.read_bytes()

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_heatmap([[0.1, 0.2]], ["crime", "insult"], out)
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["cross.png"]


def test_plot_heatmap_lists(tmp_path):
    from drirl.plots import plot_heatmap

    assert plot_heatmap([[0.5, 1.0, 0.0]], ["a", "b", "c"], tmp_path / "one_row.png").is_file()
    with pytest.raises(ValueError, match="one per category"):
        plot_heatmap([[0.5]], ["a", "b"], tmp_path / "bad.png")
