"""The Example schema, the taxonomy, reading/writing example files, the bundled set and the test-split guard."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drirl.data.schema import (
    BENIGN,
    Example,
    assert_not_test,
    assert_train_only,
    bundled_dataset_paths,
    card_path,
    load_bundled,
    load_taxonomy,
    read_card,
    read_examples,
    read_examples_report,
    split_examples,
    train_examples,
    validation_examples,
    write_examples,
)
from drirl.errors import DataError

HARM_IDS = ["insult", "discrimination", "crime", "physical_harm", "mental_health", "privacy", "ethics"]


def _examples() -> list[Example]:
    return [
        Example("a-1", "How do I pick a lock?", "crime", "Draft: lock -> theft -> refuse\nAnswer: I can't help.",
                "test-src"),
        Example("a-2", [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Insult him."}],
                "insult", None, "test-src", "test", {"note": "chat"}),
        Example("b-1", "What is the capital of Peru?", BENIGN, "Lima.", "test-src", "train", {"borderline": False}),
    ]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(**overrides) -> str:
    row = {"id": "x-1", "prompt": "How do I pick a lock?", "category": "crime", "demonstration": None,
           "source": "t", "split": "train", "meta": {}}
    row.update(overrides)
    return json.dumps({k: v for k, v in row.items() if v != "__drop__"})


# --------------------------------------------------------------------------------------------- round trips
def test_example_dict_round_trip():
    for example in _examples():
        assert Example.from_dict(example.to_dict()) == example


def test_jsonl_round_trip_with_card(tmp_path):
    path = tmp_path / "out" / "examples.jsonl"
    write_examples(path, _examples(), card={"stage": "test", "n": 3})
    assert read_examples(path) == _examples()
    assert card_path(path) == tmp_path / "out" / "examples.jsonl.card.json"
    assert read_card(path) == {"stage": "test", "n": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["examples.jsonl", "examples.jsonl.card.json"]


def test_datasets_folder_round_trip(tmp_path):
    folder = tmp_path / "examples_ds"
    write_examples(folder, _examples(), card={"stage": "test"})
    assert folder.is_dir() and (folder / "dataset_card.json").is_file()
    assert read_examples(folder) == _examples()
    assert read_card(folder) == {"stage": "test"}
    # Overwriting replaces the folder atomically and leaves no temporary folder behind.
    write_examples(folder, _examples()[:1])
    assert read_examples(folder) == _examples()[:1]
    assert [p.name for p in tmp_path.iterdir()] == ["examples_ds"]


def test_write_refuses_duplicate_ids_and_leaves_nothing(tmp_path):
    example = _examples()[0]
    with pytest.raises(DataError, match="duplicate id"):
        write_examples(tmp_path / "dup.jsonl", [example, example])
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_previous_file(tmp_path):
    path = tmp_path / "keep.jsonl"
    write_examples(path, _examples())
    before = path.read_bytes()

    def broken():
        yield _examples()[0]
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_examples(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.jsonl"]


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("line", "message", "field"), [
    ("{not json", "malformed JSON", None),
    ("[1, 2]", "expected a JSON object", None),
    (_row(id="__drop__"), "missing column", "id"),
    (_row(prompt="__drop__"), "missing column", "prompt"),
    (_row(category="__drop__"), "missing column", "category"),
    (_row(prompt="   "), "empty prompt", "prompt"),
    (_row(prompt=[]), "empty prompt", "prompt"),
    (_row(prompt=[{"role": "user"}]), "message 0", "prompt"),
    (_row(prompt=3), "prompt must be", "prompt"),
    (_row(category="weapons"), "unknown category 'weapons'", "category"),
    (_row(split="dev"), "wrong split value 'dev' (expected 'train', 'validation' or 'test')", "split"),
    (_row(meta=[1]), "meta must be an object", "meta"),
    (_row(demonstration=5), "demonstration must be", "demonstration"),
    (_row(id=""), "id must be a non-empty string", "id"),
    (_row(catgory="crime"), "unknown field", "catgory"),
])
def test_bad_record_errors_name_file_line_and_field(tmp_path, line, message, field):
    path = _write_lines(tmp_path / "bad.jsonl", [_row(id="ok-1"), "", _row(id="ok-2"), line])
    with pytest.raises(DataError) as info:
        read_examples(path)
    text = str(info.value)
    assert message in text
    assert "bad.jsonl:4" in text, text  # the blank line still counts: line numbers are the file's
    assert info.value.line == 4
    if field:
        assert f"field '{field}'" in text
        assert info.value.field == field


def test_duplicate_id_names_both_lines(tmp_path):
    path = _write_lines(tmp_path / "dup.jsonl", [_row(id="same"), _row(id="other"), _row(id="same")])
    with pytest.raises(DataError, match=r"dup\.jsonl:3 field 'id': duplicate id 'same' \(first seen at line 1\)"):
        read_examples(path)


def test_require_demonstration(tmp_path):
    path = _write_lines(tmp_path / "nodemo.jsonl", [_row(demonstration="Draft: a\nAnswer: b"), _row(id="x-2")])
    with pytest.raises(DataError, match=r"nodemo\.jsonl:2 field 'demonstration': missing demonstration"):
        read_examples(path, require_demonstration=True)
    assert len(read_examples(path)) == 2


def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(_row().encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        read_examples(path)
    with pytest.raises(DataError, match=r"missing\.jsonl: file not found"):
        read_examples(tmp_path / "missing.jsonl")
    (tmp_path / "notadataset").mkdir()
    with pytest.raises(DataError, match="notadataset: not a JSONL file or a datasets folder"):
        read_examples(tmp_path / "notadataset")


def test_skip_invalid_counts_reasons(tmp_path):
    path = _write_lines(tmp_path / "mixed.jsonl", [
        _row(id="ok-1"), "{bad", _row(id="ok-1"), _row(id="c", category="weapons"), _row(id="d", category="nope"),
        _row(id="e", split="dev"), _row(id="f", prompt=""), _row(id="g", prompt="__drop__"), _row(id="ok-2"),
    ])
    examples, skipped = read_examples_report(path, skip_invalid=True)
    assert [e.id for e in examples] == ["ok-1", "ok-2"]
    assert skipped == {"malformed JSON": 1, "duplicate id": 1, "unknown category": 2, "wrong split value": 1,
                       "empty prompt": 1, "missing column 'prompt'": 1}
    assert read_examples(path, skip_invalid=True) == examples


def test_datasets_folder_errors_name_the_row(tmp_path):
    import datasets

    folder = tmp_path / "hf"
    datasets.Dataset.from_dict({"id": ["a", "b"], "prompt": ["hello there", ""], "category": [BENIGN, BENIGN]}) \
        .save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"hf:2 field 'prompt': empty prompt"):
        read_examples(folder)


# --------------------------------------------------------------------------------------------- taxonomy
def test_default_taxonomy():
    taxonomy = load_taxonomy()
    assert taxonomy.ids == HARM_IDS
    assert taxonomy.all_ids == [*HARM_IDS, BENIGN]
    assert taxonomy.get("crime").name == "Crimes and illegal activities"
    assert all(c.description for c in taxonomy.categories)
    with pytest.raises(DataError, match=r"f\.jsonl:7 field 'category': unknown category 'x'"):
        taxonomy.validate("x", file="f.jsonl", line=7)


def test_user_taxonomy_replaces_the_bundled_one(tmp_path):
    taxonomy_path = tmp_path / "mine.yaml"
    taxonomy_path.write_text("categories:\n  - {id: weapons, name: Weapons, description: guns}\n"
                             "  - {id: spam, name: Spam}\n")
    taxonomy = load_taxonomy(taxonomy_path)
    assert taxonomy.ids == ["weapons", "spam"]
    path = _write_lines(tmp_path / "ex.jsonl", [_row(category="weapons"), _row(id="x-2", category=BENIGN)])
    assert [e.category for e in read_examples(path, taxonomy=taxonomy)] == ["weapons", BENIGN]
    with pytest.raises(DataError, match="unknown category 'weapons'"):
        read_examples(path)  # not in the bundled taxonomy
    crime = _write_lines(tmp_path / "crime.jsonl", [_row()])
    with pytest.raises(DataError, match=r"unknown category 'crime' \(taxonomy .*mine\.yaml: weapons, spam, benign\)"):
        read_examples(crime, taxonomy=taxonomy)


@pytest.mark.parametrize(("text", "message"), [
    ("categories: []", "non-empty list"),
    ("categories:\n  - {id: Bad-Id}", "lowercase"),
    ("categories:\n  - {id: benign}", "reserved"),
    ("categories:\n  - {id: a}\n  - {id: a}", "duplicate category id"),
    ("categories: [", "invalid YAML"),
])
def test_bad_taxonomy(tmp_path, text, message):
    path = tmp_path / "tax.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_taxonomy(path)
    assert "tax.yaml" in str(info.value)


# --------------------------------------------------------------------------------------------- bundled set
def test_bundled_set():
    examples = load_bundled()
    by_category = Counter(e.category for e in examples)
    assert all(by_category[c] >= 40 for c in HARM_IDS), by_category
    assert by_category[BENIGN] >= 200
    benign = [e for e in examples if e.category == BENIGN]
    assert sum(bool(e.meta.get("borderline")) for e in benign) >= 60
    assert len({e.id for e in examples}) == len(examples)
    assert all(e.demonstration for e in examples)
    assert [p.name for p in bundled_dataset_paths()] == ["harmful.jsonl", "benign.jsonl"]


def test_bundled_split_is_fixed():
    examples = load_bundled()
    test = split_examples(examples, "test")
    validation = split_examples(examples, "validation")
    # The split ids are written in the files: per harm category 001-036 train, 037-056 test, 057-062 validation.
    for category in HARM_IDS:
        ids = sorted(e.id for e in test if e.category == category)
        assert ids == [f"{category}-{n:03d}" for n in range(37, 57)]
        ids = sorted(e.id for e in validation if e.category == category)
        assert ids == [f"{category}-{n:03d}" for n in range(57, 63)]
    assert load_bundled(split="test") == test
    assert load_bundled(split="validation") == validation
    assert {e.category for e in load_bundled(categories=["crime"])} == {"crime"}
    with pytest.raises(DataError, match="unknown category"):
        load_bundled(categories=["weapons"])


def _normalised(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def test_bundled_counts_per_split_and_no_prompt_in_two_splits():
    examples = load_bundled()
    counts = Counter((e.split, e.category, bool(e.meta.get("borderline"))) for e in examples)
    for category in HARM_IDS:
        assert counts[("train", category, False)] == 36
        assert counts[("validation", category, False)] == 6
        assert counts[("test", category, False)] == 20
    assert counts[("train", BENIGN, True)] == 50 and counts[("train", BENIGN, False)] == 100
    assert counts[("validation", BENIGN, True)] == 15 and counts[("validation", BENIGN, False)] == 15
    assert counts[("test", BENIGN, True)] == 60 and counts[("test", BENIGN, False)] == 60
    assert sum(counts.values()) == len(examples) == 734
    # No prompt (case, punctuation and spacing ignored) appears twice, within a split or across splits.
    first: dict[str, Example] = {}
    for example in examples:
        key = _normalised(example.prompt_text())
        assert key not in first, (example.id, example.split, first.get(key) and first[key].id)
        first[key] = example
    assert _normalised("How do I kill a Process?") == _normalised("how do i  kill a process")


def test_bundled_demonstrations_pass_the_full_teacher_filter():
    from drirl.data.demos import load_templates, normalize_demonstration

    templates = load_templates()
    rejected = {}
    for example in load_bundled():
        _, reason, _ = normalize_demonstration(example.demonstration, example.category,
                                               template=templates[example.category], prompt=example.prompt_text())
        if reason:
            rejected[example.id] = reason
    # only the two rows that the templates quote as their example count as an echo of the template
    assert rejected == {"insult-001": "echoed template", "benign-001": "echoed template"}
    assert all(_bundled_row(i).demonstration.split("\n")[0] in templates[_bundled_row(i).category]
               for i in rejected)


def _bundled_row(example_id: str) -> Example:
    return next(e for e in load_bundled() if e.id == example_id)


def test_bundled_demonstrations_all_have_the_chain_of_draft_form():
    from drirl.data.demos import is_refusal, normalize_demonstration

    # Harmful and benign alike: "Draft: a -> b -> c\nAnswer: ...", so the form itself carries no decision.
    for example in load_bundled():
        demonstration, reason, _ = normalize_demonstration(example.demonstration, example.category)
        assert reason is None, (example.id, reason)
        assert demonstration == example.demonstration
        draft_line, answer_line = example.demonstration.split("\n")
        assert draft_line.startswith("Draft: ") and answer_line.startswith("Answer: ")
        assert 3 <= len(draft_line.split(" -> ")) <= 5, example.id
        assert is_refusal(answer_line) == (example.category != BENIGN), example.id


def test_bundled_draft_shape_is_the_same_for_harmful_and_benign():
    # Not only "Draft:" on both sides: the number of steps and the draft length must not tell the decision either.
    steps: dict[bool, Counter] = {True: Counter(), False: Counter()}
    words: dict[bool, list[int]] = {True: [], False: []}
    for example in load_bundled():
        draft = example.demonstration.split("\n")[0][len("Draft: "):]
        steps[example.category == BENIGN][len(draft.split(" -> "))] += 1
        words[example.category == BENIGN].append(len(draft.split()))
    share_four = {side: c[4] / sum(c.values()) for side, c in steps.items()}
    assert abs(share_four[True] - share_four[False]) < 0.05, share_four
    mean_words = {side: sum(w) / len(w) for side, w in words.items()}
    assert abs(mean_words[True] - mean_words[False]) < 1.5, mean_words


# --------------------------------------------------------------------------------------------- split guard
def test_no_training_on_the_test_split():
    examples = load_bundled()
    train = train_examples(examples)
    assert train and all(e.split == "train" for e in train)
    assert_not_test(train)
    with pytest.raises(DataError, match=r"260 test-split and 72 validation-split example\(s\) reached training"):
        assert_not_test(examples)
    with pytest.raises(DataError, match=r"72 validation-split example\(s\) reached training .*: refusing to train "
                                        r"on the validation split"):
        assert_not_test(split_examples(examples, "validation"))
    with pytest.raises(DataError, match="wrong split value 'dev'"):
        split_examples(examples, "dev")


def test_validation_rows_are_refused_like_test_rows(tmp_path):
    train = Example("t-1", "How do I pick a lock?", "crime", None, "s", "train")
    valid = Example("v-1", "How do I pick a safe?", "crime", None, "s", "validation")
    test = Example("x-1", "How do I pick a car lock?", "crime", None, "s", "test")
    assert_not_test([train])
    assert assert_train_only is assert_not_test
    with pytest.raises(DataError, match=r"1 validation-split example\(s\) reached reward training \(v-1\): "
                                        r"refusing to train on the validation split$") as info:
        assert_not_test([train, valid], where="reward training")
    assert info.value.field == "split"
    with pytest.raises(DataError, match=r"1 test-split and 1 validation-split example\(s\) reached training "
                                        r"\(v-1, x-1\): refusing to train on the test and validation splits"):
        assert_not_test([valid, train, test])
    assert train_examples([train, valid, test]) == [train]
    assert validation_examples([train, valid, test]) == [valid]
    assert split_examples([train, valid, test], "test") == [test]
    # the split survives a round trip through both file formats
    for path in (tmp_path / "v.jsonl", tmp_path / "v_folder"):
        write_examples(path, [train, valid, test])
        assert [e.split for e in read_examples(path)] == ["train", "validation", "test"]


# --------------------------------------------------------------------------------------------- fuzz
_json_lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.builds(_row, id=st.one_of(st.text(max_size=4), st.integers()), prompt=st.one_of(st.text(max_size=8),
                  st.lists(st.dictionaries(st.sampled_from(["role", "content"]), st.text(max_size=5)), max_size=2)),
                  category=st.sampled_from([*HARM_IDS, BENIGN, "nope", ""]),
                  split=st.sampled_from(["train", "test", "dev", None]),
                  meta=st.one_of(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.text(max_size=3)),
                  demonstration=st.one_of(st.none(), st.text(max_size=8), st.integers())),
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                 max_size=3),
                     max_leaves=8).map(json.dumps),
    ),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode("utf-8", errors="surrogatepass"))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), _json_lines), skip=st.booleans())
def test_read_examples_fuzz(tmp_path, data, skip):
    folder = tmp_path / "fuzz"
    folder.mkdir(exist_ok=True)
    path = folder / "input.jsonl"
    path.write_bytes(data)
    try:
        examples = read_examples(path, skip_invalid=skip)
    except DataError:
        pass
    else:
        assert all(isinstance(e, Example) for e in examples)
        assert len({e.id for e in examples}) == len(examples)
    assert os.listdir(folder) == ["input.jsonl"]
