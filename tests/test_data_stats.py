"""`drirl data stats` numbers on hand-made examples: counts per split, word lengths and the form table."""

from __future__ import annotations

from drirl.data.schema import BENIGN, Example
from drirl.data.stats import dataset_stats, demonstration_form, format_stats_table, split_draft


def test_split_draft():
    assert split_draft("Draft: a -> b -> c\nAnswer: Do it.") == ("a -> b -> c", "Do it.")
    assert split_draft("  Draft: x\nAnswer: y  ") == ("x", "y")
    assert split_draft("Just an answer.") == (None, "Just an answer.")
    assert split_draft("Draft: only a draft") == (None, "Draft: only a draft")


def test_demonstration_form_hand_computed():
    form = demonstration_form(["Draft: a -> b\nAnswer: one two three", "Plain answer of five words."])
    # one of two has a draft ("a -> b" is 3 words); answers have 3 and 5 words
    assert form == {"n": 2, "with_draft": 0.5, "draft_steps": 2.0, "draft_words": 3.0, "answer_words": 4.0}
    assert demonstration_form([]) is None
    assert demonstration_form(["no draft here"])["draft_words"] is None


def test_dataset_stats_counts_and_form():
    examples = [
        Example("c-1", "p1", "crime", "Draft: a -> b -> c\nAnswer: I can't help.", "t", "train"),
        Example("c-2", "p2", "crime", "Draft: a -> b\nAnswer: I won't do that at all.", "t", "validation"),
        Example("c-3", "p3", "crime", None, "t", "test"),
        Example("b-1", "p4", BENIGN, "Sure, here it is.", "t", "test"),
    ]
    stats = dataset_stats(examples)
    assert stats["categories"]["crime"] == {"train": 1, "validation": 1, "test": 1}
    assert stats["categories"][BENIGN] == {"train": 0, "validation": 0, "test": 1}
    assert stats["categories"]["insult"] == {"train": 0, "validation": 0, "test": 0}
    # drafts "a -> b -> c" (5 words, 3 steps) and "a -> b" (3 words, 2 steps); answers of 3 and 6 words
    assert stats["form"]["crime"] == {"n": 2, "with_draft": 1.0, "draft_steps": 2.5, "draft_words": 4.0,
                                      "answer_words": 4.5}
    assert stats["form"][BENIGN] == {"n": 1, "with_draft": 0.0, "draft_steps": None, "draft_words": None,
                                     "answer_words": 4.0}
    assert stats["form_harmful"] == stats["form"]["crime"]
    table = format_stats_table(stats)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["category", "train", "valid", "test", "total"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split() == ["total", "1", "1", "2", "4", "3"]
    form_rows = {line.split()[0]: line.split() for line in lines[lines.index("") + 1:]}
    assert form_rows["crime"] == ["crime", "2", "100%", "2.50", "4.0", "4.5"]
    assert form_rows[BENIGN] == [BENIGN, "1", "0%", "-", "-", "4.0"]
    assert form_rows["all"][:2] == ["all", "harmful"]
