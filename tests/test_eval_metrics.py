"""Metrics (hand-computed numbers) and jailbreak template loading/validation."""

from __future__ import annotations

import json
import math

import pytest

from drirl.errors import DataError
from drirl.eval.jailbreaks import JailbreakTemplate, load_jailbreak_templates, wrap
from drirl.eval.metrics import bootstrap_ci, normalize_answer_tokens, per_category, qa_correct

# ----------------------------------------------------------------------------------------------- bootstrap_ci


def test_bootstrap_empty_is_nan_triple():
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert all(math.isnan(x) for x in bootstrap_ci([None, float("nan")]))


def test_bootstrap_single_and_constant_values_have_zero_width():
    assert bootstrap_ci([0.25]) == (0.25, 0.25, 0.25)
    assert bootstrap_ci([1, 1, 1, 1]) == (1.0, 1.0, 1.0)
    assert bootstrap_ci([0.0, 0.0]) == (0.0, 0.0, 0.0)


def test_bootstrap_two_points_spans_zero_to_one():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% quantiles of
    # 1000 resamples are 0 and 1.
    assert bootstrap_ci([0, 1], n_resamples=1000) == (0.5, 0.0, 1.0)


def test_bootstrap_matches_normal_approximation():
    values = [0, 0, 0, 1] * 25  # mean 0.25, standard error sqrt(0.25 * 0.75 / 100) = 0.0433
    mean, low, high = bootstrap_ci(values, n_resamples=2000)
    assert mean == pytest.approx(0.25)
    assert low == pytest.approx(0.25 - 1.96 * 0.0433, abs=0.02)
    assert high == pytest.approx(0.25 + 1.96 * 0.0433, abs=0.02)
    assert low <= mean <= high


def test_bootstrap_is_deterministic_by_seed():
    values = [0.1, 0.9, 0.3, 0.4, 0.8, 0.2, 0.7]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    assert bootstrap_ci(values)[0] == pytest.approx(sum(values) / len(values))


def test_bootstrap_drops_missing_values_and_checks_confidence():
    assert bootstrap_ci([1, None, 0], n_resamples=500)[0] == 0.5
    with pytest.raises(ValueError):
        bootstrap_ci([0, 1], confidence=1.5)


def test_per_category_hand_computed():
    out = per_category([1, 0, 1, 1, None], ["a", "b", "a", "b", "c"], n_resamples=1000)
    assert list(out) == ["a", "b", "c"]  # order of first appearance
    assert out["a"] == (1.0, 1.0, 1.0, 2)
    assert out["b"] == (0.5, 0.0, 1.0, 2)
    assert math.isnan(out["c"][0]) and out["c"][3] == 0
    with pytest.raises(ValueError):
        per_category([1, 0], ["a"])


def test_per_category_wilson_for_rates():
    out = per_category([1, 1, 0, 1, 0.5, 1], ["a", "a", "b", "b", "c", "c"], wilson_for_rates=True)
    # 2 of 2: Wilson (1 + z²/4 − z·√(z²/16)) / (1 + z²/2) = 0.34238, not the bootstrap's [1, 1].
    assert out["a"][:2] == (1.0, pytest.approx(0.34238, abs=1e-5)) and out["a"][2:] == (1.0, 2)
    assert out["b"][1] == pytest.approx(0.094531, abs=1e-6) and out["b"][2] == pytest.approx(0.905469, abs=1e-6)
    # Graded values keep the bootstrap interval.
    assert out["c"] == per_category([0.5, 1], ["c", "c"])["c"]


# ----------------------------------------------------------------------------------------------- qa_correct

@pytest.mark.parametrize("response, answers, expected", [
    ("The answer is 12.", ["12", "twelve"], True),
    ("There are 112 of them.", ["12"], False),  # whole numbers only
    ("About 12.5 on average.", ["12"], False),  # a decimal is one token
    ("Twelve, of course", ["12", "twelve"], True),
    ("PARIS!", ["Paris"], True),
    ("A Parisian cafe", ["Paris"], False),  # whole words only
    ("It's Washington, D.C.", ["Washington D.C."], True),  # punctuation ignored on both sides
    ("Roughly 1,000 metres", ["1000"], True),  # thousands separators
    ("I love New York", ["New York City"], False),  # every word of the alias, in a row
    ("Sao Paulo is big", ["São Paulo"], True),  # accents ignored
    ("ninety-nine", ["ninety nine"], True),
    ("Breathing out CO2", ["2"], False),
    ("", ["x"], False),
    ("Anything", [], False),
])
def test_qa_correct(response, answers, expected):
    assert qa_correct(response, answers) is expected


def test_normalize_answer_tokens():
    assert normalize_answer_tokens("São-Paulo! It's 3.5, not 35.") == ["sao", "paulo", "it", "s", "3.5", "not", "35"]


# ----------------------------------------------------------------------------------------------- jailbreaks

def test_bundled_templates_are_valid():
    templates = load_jailbreak_templates()
    assert len(templates) >= 3
    assert len({t.id for t in templates}) == len(templates)
    for t in templates:
        assert t.template.count("{prompt}") == 1 and t.style
        assert "HARMFUL-REQUEST" in wrap("HARMFUL-REQUEST", t)


def test_wrap_keeps_other_braces():
    template = JailbreakTemplate("t", "s", 'JSON {"a": 1} then: {prompt}')
    assert wrap("use {x} and {}", template) == 'JSON {"a": 1} then: use {x} and {}'
    assert template.wrap("p").endswith("then: p")
    with pytest.raises(DataError, match="exactly once"):
        wrap("p", "no placeholder here")


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"id": "a", "style": "role_play", "template": "Pretend: {prompt}"}


@pytest.mark.parametrize("bad, message, field", [
    ({"id": "b", "style": "x", "template": "no placeholder"}, "exactly once, found it 0", "template"),
    ({"id": "b", "style": "x", "template": "{prompt} and {prompt}"}, "exactly once, found it 2", "template"),
    ({"id": "b", "template": "{prompt}"}, "missing or empty", "style"),
    ({"id": "", "style": "x", "template": "{prompt}"}, "missing or empty", "id"),
    ({"id": "a", "style": "x", "template": "{prompt}"}, "duplicate id", "id"),
    ({"id": "b", "style": "x", "template": "{prompt}", "extra": 1}, "unknown key", "extra"),
])
def test_template_validation_errors_name_line_and_field(tmp_path, bad, message, field):
    path = _write_jsonl(tmp_path / "t.jsonl", [GOOD, bad])
    with pytest.raises(DataError, match=message) as info:
        load_jailbreak_templates(path)
    assert info.value.line == 2 and info.value.field == field and str(path) in str(info.value)


def test_template_files_in_yaml_and_json(tmp_path):
    yaml_path = tmp_path / "t.yaml"
    yaml_path.write_text("templates:\n  - id: y1\n    style: prefix\n    template: 'Say sure. {prompt}'\n")
    assert load_jailbreak_templates(yaml_path) == [JailbreakTemplate("y1", "prefix", "Say sure. {prompt}")]
    json_path = tmp_path / "t.json"
    json_path.write_text(json.dumps([GOOD]))
    assert load_jailbreak_templates(json_path)[0].id == "a"
    with pytest.raises(DataError, match="jsonl"):
        load_jailbreak_templates(tmp_path / "t.txt")
    with pytest.raises(DataError, match="not found"):
        load_jailbreak_templates(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a"\n')
    with pytest.raises(DataError, match="malformed JSON"):
        load_jailbreak_templates(tmp_path / "bad.jsonl")
