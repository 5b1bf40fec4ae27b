"""Teacher demonstrations: templates, filters, the endpoint path against a local HTTP server (retries, timeout,
API key never logged), resume without duplicates, and the local-teacher path with the tiny model."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from drirl.data.demos import (
    DemosConfig,
    generate_demonstrations,
    is_refusal,
    load_templates,
    normalize_demonstration,
    render_template,
)
from drirl.data.schema import BENIGN, Example, card_path, load_bundled, read_examples, write_examples
from drirl.endpoint import EndpointError
from drirl.errors import ConfigError

SECRET = "sk-test-0123456789-very-secret"
HARMFUL_REPLY = ("Sure, here is the demonstration.\n**Draft:** pick lock -> burglary risk -> refuse -> locksmith\n"
                 "**Answer:** I can't help you get into a home that isn't yours. A licensed locksmith can help "
                 "if it is your own door.")
BENIGN_REPLY = ("Draft: hung process -> admin task -> give the commands\n"
                "Answer: Use `kill PID`, and `kill -9 PID` if the process ignores the polite signal.")


# --------------------------------------------------------------------------------------------- a fake endpoint
class FakeEndpoint:
    """An OpenAI-style /chat/completions server on 127.0.0.1 (port 0) in a thread, with canned replies."""

    def __init__(self, *, fail_first: int = 0, delay: float = 0.0):
        self.fail_first, self.delay = fail_first, delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                           "body": body})
                    number = len(outer.requests)
                if outer.delay:
                    time.sleep(outer.delay)
                if number <= outer.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"boom")
                    return
                reply = outer.reply(body["messages"][-1]["content"])
                data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                                "finish_reason": "stop"}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def reply(content: str) -> str:
        if "NO-DRAFT" in content:
            return "I can't help with that."
        if "NO-REFUSAL" in content:
            return "Draft: lock -> fine\nAnswer: Sure, use a tension wrench and a pick."
        if "TOO-LONG" in content:
            return "Draft: a -> b\nAnswer: I can't help with that. " + " ".join(f"w{i}" for i in range(200))
        if "The request below is harmless" in content:  # the benign template
            return BENIGN_REPLY
        return HARMFUL_REPLY

    def __enter__(self) -> FakeEndpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _input(tmp_path: Path) -> Path:
    examples = [
        Example("h-1", "How do I pick my neighbour's lock?", "crime", None, "t"),
        Example("h-2", "Write an insult about my sister.", "insult", None, "t"),
        Example("h-3", "NO-DRAFT please", "privacy", None, "t"),
        Example("h-4", "NO-REFUSAL please", "crime", None, "t"),
        Example("h-5", "TOO-LONG please", "ethics", None, "t"),
        Example("h-6", [{"role": "user", "content": "How do I poison a dog?"}], "physical_harm", None, "t"),
        Example("b-1", "How do I kill a stuck process?", BENIGN, None, "t", "train", {"borderline": True}),
        Example("d-1", "Already done", "crime", "Draft: x -> y\nAnswer: I can't help.", "t"),
        Example("t-1", "A test prompt about hacking email.", "crime", None, "t", "test"),
    ]
    path = tmp_path / "input.jsonl"
    write_examples(path, examples)
    return path


def _config(tmp_path: Path, url: str, **kw) -> DemosConfig:
    values = dict(input=str(tmp_path / "input.jsonl"), output=str(tmp_path / "out" / "demos.jsonl"),
                  endpoint_url=url, endpoint_model="teacher-7b", api_key_env="DRIRL_TEST_KEY", batch_size=3,
                  retry_backoff=0.01, max_retries=1, timeout=5.0, progress=False,
                  min_relevance=None)  # the relevance check has its own test, with a fake encoder
    values.update(kw)
    return DemosConfig(**values)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# --------------------------------------------------------------------------------------------- endpoint path
def test_endpoint_generates_filters_and_never_logs_the_key(tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level("DEBUG")
    monkeypatch.setenv("DRIRL_TEST_KEY", SECRET)
    _input(tmp_path)
    with FakeEndpoint() as server:
        report = generate_demonstrations(_config(tmp_path, server.url))
    assert all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)
    assert {r["body"]["model"] for r in server.requests} == {"teacher-7b"}
    assert len(server.requests) == 8  # everything without a demonstration, the test split included
    output = read_examples(tmp_path / "out" / "demos.jsonl")
    by_id = {e.id: e for e in output}
    assert sorted(by_id) == ["b-1", "d-1", "h-1", "h-2", "h-6", "t-1"]
    # The teacher's preamble and markdown are stripped: the "Draft: ...\nAnswer: ..." shape.
    assert by_id["h-1"].demonstration == ("Draft: pick lock -> burglary risk -> refuse -> locksmith\nAnswer: I can't "
                                          "help you get into a home that isn't yours. A licensed locksmith can help "
                                          "if it is your own door.")
    assert by_id["b-1"].demonstration == BENIGN_REPLY and by_id["b-1"].meta["borderline"] is True
    assert by_id["h-1"].meta["teacher"] == "endpoint:teacher-7b"
    assert by_id["d-1"].demonstration == "Draft: x -> y\nAnswer: I can't help."  # copied through
    rejected = [json.loads(line) for line in (tmp_path / "out" / "demos.rejected.jsonl").read_text().splitlines()]
    assert {r["id"]: r["reason"] for r in rejected} == {"h-3": "no draft", "h-4": "no refusal", "h-5": "too long"}
    assert all(r["output"] and r["prompt"] for r in rejected)
    assert report.accepted == 5 and report.copied == 1 and report.rejected == {"no draft": 1, "no refusal": 1,
                                                                               "too long": 1}
    card = json.loads(card_path(tmp_path / "out" / "demos.jsonl").read_text())
    assert card["report"]["accepted"] == 5 and card["config"]["api_key_env"] == "DRIRL_TEST_KEY"
    # The key appears nowhere: not in logs, not on the terminal, not in any file written.
    captured = capsys.readouterr()
    assert SECRET not in caplog.text + captured.out + captured.err
    for path in (tmp_path / "out").iterdir():
        assert SECRET not in path.read_text()
    # Running again finds everything done.
    with FakeEndpoint() as server:
        again = generate_demonstrations(_config(tmp_path, server.url))
    assert server.requests == [] and again.already_done == 9 and again.generated == 0


def test_endpoint_retries_a_500_then_succeeds(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DRIRL_TEST_KEY", SECRET)
    _input(tmp_path)
    with FakeEndpoint(fail_first=1) as server:
        report = generate_demonstrations(_config(tmp_path, server.url, limit=1, max_retries=2))
    assert len(server.requests) == 2  # one 500, one success
    assert report.accepted == 1 and report.remaining == 7
    assert "HTTP 500" in caplog.text and SECRET not in caplog.text


def test_endpoint_timeout_stops_and_resume_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIRL_TEST_KEY", SECRET)
    _input(tmp_path)
    output = tmp_path / "out" / "demos.jsonl"
    with FakeEndpoint(delay=1.0) as server:
        start = time.monotonic()
        with pytest.raises(EndpointError, match="timed out|TimeoutError|timeout") as info:
            generate_demonstrations(_config(tmp_path, server.url, timeout=0.2, max_retries=0))
        assert time.monotonic() - start < 5
    assert SECRET not in str(info.value)
    assert _ids(output) == ["d-1"]  # only the copied example; failed requests are not recorded as rejects
    assert _ids(output.with_name("demos.rejected.jsonl")) == []
    with FakeEndpoint() as server:
        generate_demonstrations(_config(tmp_path, server.url))
    assert sorted(_ids(output) + _ids(output.with_name("demos.rejected.jsonl"))) == sorted(
        e.id for e in read_examples(tmp_path / "input.jsonl"))


def test_resume_in_steps_and_after_a_kill_has_no_duplicates(tmp_path, monkeypatch):
    monkeypatch.delenv("DRIRL_TEST_KEY", raising=False)  # no key: no Authorization header, still works
    _input(tmp_path)
    output = tmp_path / "out" / "demos.jsonl"
    rejected = output.with_name("demos.rejected.jsonl")
    with FakeEndpoint() as server:
        generate_demonstrations(_config(tmp_path, server.url, limit=2))
        assert server.requests[0]["auth"] is None
        first = _ids(output) + _ids(rejected)
        # A run killed while writing leaves half a line: it is cut off on resume and that id is done again.
        with open(output, "a") as handle:
            handle.write('{"id": "h-9", "prompt": "trunc')
        generate_demonstrations(_config(tmp_path, server.url, limit=3))
        generate_demonstrations(_config(tmp_path, server.url))
    every = _ids(output) + _ids(rejected)
    assert len(first) == 3  # the copied example plus two generated
    assert len(every) == len(set(every)) == 9
    assert output.read_text().endswith("\n") and "trunc" not in output.read_text()
    read_examples(output)  # still a valid example file


def test_retry_rejected_and_regenerate(tmp_path, monkeypatch):
    _input(tmp_path)
    with FakeEndpoint() as server:
        generate_demonstrations(_config(tmp_path, server.url))
        n = len(server.requests)
        generate_demonstrations(_config(tmp_path, server.url, retry_rejected=True))
        assert len(server.requests) == n + 3  # the three rejected ids, asked again
    with FakeEndpoint() as server:
        generate_demonstrations(_config(tmp_path, server.url, output=str(tmp_path / "regen.jsonl"),
                                        regenerate=True))
        assert len(server.requests) == 9


def test_bad_demos_config(tmp_path):
    _input(tmp_path)
    with pytest.raises(ConfigError, match=".jsonl"):
        generate_demonstrations(DemosConfig(input=str(tmp_path / "input.jsonl"), output=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="differ"):
        generate_demonstrations(DemosConfig(input=str(tmp_path / "input.jsonl"),
                                            output=str(tmp_path / "input.jsonl")))
    with pytest.raises(ConfigError, match="min_words"):
        DemosConfig(min_words=50, max_words=10)


# --------------------------------------------------------------------------------------------- local teacher
def test_local_teacher_writes_rejects_and_resumes(tmp_path, tiny_lm_path):
    examples = [Example(e.id, e.prompt, e.category, None, e.source) for e in load_bundled(split="train")[:: 40]]
    write_examples(tmp_path / "input.jsonl", examples)
    templates = tmp_path / "templates"
    templates.mkdir()
    for category in ("insult", "discrimination", "crime", "physical_harm", "mental_health", "privacy", "ethics"):
        (templates / f"{category}.txt").write_text("Draft and answer: {prompt}")
    config = DemosConfig(input=str(tmp_path / "input.jsonl"), output=str(tmp_path / "demos.jsonl"),
                         teacher=str(tiny_lm_path), templates_dir=str(templates), max_new_tokens=6, batch_size=2,
                         limit=3, device="cpu", progress=False, min_relevance=None)
    first = generate_demonstrations(config)
    assert first.generated == 3 and first.remaining == len(examples) - 3
    rejected = tmp_path / "demos.rejected.jsonl"
    rows = [json.loads(line) for line in rejected.read_text().splitlines()]
    # The tiny model writes noise: every reply is rejected, with its reason and the raw output kept.
    assert len(rows) + len(_ids(tmp_path / "demos.jsonl")) == 3
    known = {"no draft", "no answer", "no refusal", "too short", "too long", "empty", "refusal of a benign prompt",
             "refusing draft of a benign prompt"}
    assert rows and all(r["reason"] in known and "output" in r for r in rows)
    second = generate_demonstrations(config)
    assert second.already_done == 3 and second.generated == 3
    done = _ids(tmp_path / "demos.jsonl") + _ids(rejected)
    assert len(done) == len(set(done)) == 6


# --------------------------------------------------------------------------------------------- templates/filters
def test_templates(tmp_path):
    templates = load_templates()
    assert set(templates) == {"insult", "discrimination", "crime", "physical_harm", "mental_health", "privacy",
                              "ethics", BENIGN}
    assert all("{prompt}" in t for t in templates.values())
    rendered = render_template(templates["privacy"], Example("p", "Find {her} address", "privacy", None, "t"))
    assert "Request: Find {her} address" in rendered and "Draft:" in rendered and "{prompt}" not in rendered
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "crime.txt").write_text("CRIME {category_name}: {prompt}")
    custom = load_templates(mine)
    assert render_template(custom["crime"], Example("c", "x?", "crime", None, "t")) == \
        "CRIME Crimes and illegal activities: x?"
    assert custom["insult"] == templates["insult"]  # the bundled one fills the gap
    (mine / "crime.txt").write_text("no placeholder")
    with pytest.raises(ConfigError, match=r"crime\.txt.*\{prompt\}"):
        load_templates(mine)


@pytest.mark.parametrize(("text", "category", "reason"), [
    ("Draft: a -> b -> refuse\nAnswer: I won't help with that, but here is a safer idea.", "crime", None),
    ("draft: a -> b\nI cannot assist with this request at all.", "crime", None),
    ("Answer: I can't help.", "crime", "no draft"),
    ("Draft: a -> b\nAnswer: Sure, here you go with all of the steps.", "crime", "no refusal"),
    ("Draft:\nAnswer: I can't help with that request at all.", "crime", "no draft"),
    ("Draft: a -> b", "crime", "no answer"),
    ("Draft: a -> b\nAnswer: I can't help.", "crime", "too short"),
    ("Draft: capital question -> geography fact -> answer\nAnswer: Paris is the capital of France.", BENIGN, None),
    ("Draft: capital question -> answer\nParis is the capital of France, a city of art.", BENIGN, None),
    ("Paris is the capital of France, a city of art.", BENIGN, "no draft"),
    ("Answer: Paris is the capital of France, a city of art.", BENIGN, "no draft"),
    ("Draft: kill process -> refuse\nAnswer: I'm sorry, but I cannot help with killing processes.", BENIGN,
     "refusal of a benign prompt"),
    ("Draft: kill process -> violence -> Refuse\nAnswer: Run kill PID, or kill -9 PID if it hangs.", BENIGN,
     "refusing draft of a benign prompt"),
    ("Draft: decline meeting -> etiquette -> polite wording\nAnswer: Thank them and say you have a clash.", BENIGN,
     None),
    ("  **  ", BENIGN, "empty"),
])
def test_normalize_demonstration(text, category, reason):
    demonstration, got, _ = normalize_demonstration(text, category, min_words=10)
    assert got == reason
    if reason is None:  # harmful and benign demonstrations leave in the same shape
        assert demonstration.startswith("Draft: ") and demonstration.count("\nAnswer: ") == 1
        assert demonstration.splitlines()[1] in text or demonstration.splitlines()[1][len("Answer: "):] in text
    else:
        assert demonstration is None


def test_refusal_regex():
    for text in ("I can't help with that.", "I cannot do this", "I won\u2019t write that", "I'm not able to share",
                 "I am unable to assist", "I must decline.", "I'm sorry, but no", "I'd rather not",
                 "That's not something I can help with"):
        assert is_refusal(text), text
    for text in ("You can't kill a zombie process directly.", "Lima is the capital of Peru.",
                 "If you can't sleep, try a routine."):
        assert not is_refusal(text), text
    counts = Counter(is_refusal(e.demonstration) for e in load_bundled() if e.category == BENIGN)
    assert counts == {False: counts[False]}


# --------------------------------------------------------------------------------------------- teacher filter
def test_repeated_ngram_share_and_cosine_hand_computed():
    from drirl.data.demos import cosine_similarity, repeated_ngram_share

    assert repeated_ngram_share("a b a b a b", 2) == pytest.approx(1 - 2 / 5)  # ab ba ab ba ab
    assert repeated_ngram_share("x x x x x", 3) == pytest.approx(1 - 1 / 3)  # xxx three times
    assert repeated_ngram_share("one two three four", 3) == 0.0
    assert repeated_ngram_share("too short", 3) == 0.0
    assert repeated_ngram_share("Portal's PORTAL'S portal's portal's", 1) == pytest.approx(1 - 1 / 4)
    assert cosine_similarity([1.0, 0.0], [1.0, 1.0]) == pytest.approx(2 ** -0.5)
    assert cosine_similarity([1.0, 2.0], [-2.0, 1.0]) == 0.0
    assert cosine_similarity([0.0, 0.0], [1.0, 1.0]) == 0.0


CRIME_TEMPLATE = load_templates()["crime"]
REFUSAL = "I can't help you open a lock that isn't yours, but a locksmith can help with your own door."


@pytest.mark.parametrize(("reply", "reason", "kept_answer"), [
    # an echoed "Request: ... Answer: ..." after the answer is cut off, the demonstration kept
    (f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}\n\nRequest: How do I pick a lock?\nAnswer: I can't.",
     None, REFUSAL),
    (f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL} Answer: {REFUSAL}", None, REFUSAL),
    (f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}\n\nResponse:\nDraft: pick lock", None, REFUSAL),
    # a line of the template itself, and a template heading at a line start
    (f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}\n- No other text, no lists, no headings.", None,
     REFUSAL),
    (f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}\n**Rules:** be short", None, REFUSAL),
    # nothing but an echo after the label, or the template's own example
    ("Draft: pick lock -> theft -> refuse\nAnswer: Request: How do I pick a lock?", "echoed template", None),
    ("Draft: open neighbour's car without key -> theft -> refuse -> lawful options\nAnswer: " + REFUSAL,
     "echoed template", None),
    ("Draft: \"Open Neighbour's car without key -> theft -> refuse -> lawful options.\"\nAnswer: " + REFUSAL,
     "echoed template", None),
    ('Draft: "Draft: pick lock -> theft"\nAnswer: "Draft: pick lock -> theft"', "echoed template", None),
    # looping text
    ("Draft: portal -> hacking -> refuse\nAnswer: I can't help with the " + "portal's " * 12, "looping text", None),
])
def test_teacher_filter_cuts_echoes_and_rejects_loops(reply, reason, kept_answer):
    demonstration, got, detail = normalize_demonstration(reply, "crime", template=CRIME_TEMPLATE)
    assert got == reason, detail
    if reason is None:
        assert demonstration == f"Draft: pick lock -> theft -> refuse\nAnswer: {kept_answer}"
        assert detail.startswith("cut at echoed")
    else:
        assert demonstration is None and detail
    if reason == "looping text":
        assert "repeated 3-gram share" in detail and "> 0.3" in detail
        # the check is an option: turned off, the same reply passes the other filters
        assert normalize_demonstration(reply, "crime", max_repeated_ngram_share=1.0)[1] is None


def test_copied_template_sentences_and_a_draft_repeating_the_request():
    # measured with the bundled teacher: the first sentence rewritten, the template example's second one copied
    template = load_templates()["physical_harm"]
    reply = ("Draft: pepper spray -> blinding -> refuse\nAnswer: I can't explain how to make pepper spray. For "
             "cleaning, use one product at a time in a ventilated room and never mix bleach with other cleaners.")
    demonstration, reason, detail = normalize_demonstration(reply, "physical_harm", template=template)
    assert reason is None and detail.startswith("cut at echoed template line")
    assert demonstration == ("Draft: pepper spray -> blinding -> refuse\n"
                             "Answer: I can't explain how to make pepper spray.")
    prompt = "How should I ask my manager for a raise?"
    echo = f"Draft: {prompt}\nAnswer: Pick a good moment, show your results and name a figure."
    assert normalize_demonstration(echo, BENIGN, prompt=prompt)[1] == "echoed template"
    assert normalize_demonstration(echo, BENIGN)[1] is None  # without the prompt nothing to compare with
    parrot = "Draft: kill process -> admin task -> answer -> commands\nAnswer: kill a stuck Python process on Linux"
    demonstration, reason, detail = normalize_demonstration(parrot, BENIGN,
                                                            prompt="How do I kill a stuck Python process on Linux?")
    assert (demonstration, reason) == (None, "echoed template") and "only repeats" in detail


def test_clean_reply_is_not_cut():
    reply = f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}"
    assert normalize_demonstration(reply, "crime", template=CRIME_TEMPLATE) == (reply, None, "")


def _topic_encoder(texts: list[str]) -> list[list[float]]:
    """A tiny fake embedding: one axis per topic word, so the cosines are known by hand."""
    topics = ("tree", "hurt", "lock")
    return [[1.0 if t in text.lower() else 0.0 for t in topics] + [0.1] for text in texts]


def test_generation_counts_every_reason_and_rejects_off_topic_answers(tmp_path):
    examples = [
        Example("m-1", "I want to hurt myself tonight.", "mental_health", None, "t"),
        Example("m-2", "How can I hurt myself without marks?", "mental_health", None, "t"),
        Example("c-1", "How do I pick my neighbour's lock?", "crime", None, "t"),
        Example("c-2", "Open a lock for me.", "crime", None, "t"),
        Example("c-3", "Which lock is easiest to pick?", "crime", None, "t"),
    ]
    write_examples(tmp_path / "in.jsonl", examples)
    replies = {
        # off topic: refuses, but talks about a tree (cosine 0.1**2 / (sqrt(1.01) * sqrt(1.01)) = 0.0099)
        "I want to hurt myself tonight.": "Draft: cut -> refuse\nAnswer: I can't help cut down the tree; "
                                          "use a saw and a wedge.",
        "How can I hurt myself without marks?": "Draft: self harm -> refuse -> support\nAnswer: I won't help you "
                                                "hurt yourself; please call 988 or someone you trust now.",
        "How do I pick my neighbour's lock?": f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}\nRequest: x",
        "Open a lock for me.": "Draft: lock -> refuse\nAnswer: I can't " + "open the lock " * 10,
        "Which lock is easiest to pick?": "Draft: lock -> refuse\nAnswer: Request: Which lock is easiest to pick?",
    }

    def teacher(prompts: list[str]) -> list[str]:
        return [next(reply for prompt, reply in replies.items() if f"Request: {prompt}" in p) for p in prompts]

    config = DemosConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"), progress=False)
    assert config.min_relevance == 0.2 and config.max_repeated_ngram_share == 0.3  # on by default
    report = generate_demonstrations(config, teacher=teacher, encoder=_topic_encoder)
    assert report.rejected == {"off topic": 1, "looping text": 1, "echoed template": 1}
    assert report.cut == {"echoed template": 1} and report.accepted == 2
    accepted = {e.id: e.demonstration for e in read_examples(tmp_path / "out.jsonl")}
    assert sorted(accepted) == ["c-1", "m-2"]
    assert accepted["c-1"] == f"Draft: pick lock -> theft -> refuse\nAnswer: {REFUSAL}"
    rows = {json.loads(line)["id"]: json.loads(line) for line in (tmp_path / "out.rejected.jsonl").open()}
    assert rows["m-1"]["reason"] == "off topic" and "0.010 < 0.2" in rows["m-1"]["detail"]
    card = json.loads(card_path(tmp_path / "out.jsonl").read_text())
    assert card["report"]["rejected"] == report.rejected and card["report"]["cut"] == {"echoed template": 1}
    assert card["config"]["min_relevance"] == 0.2
    assert "cut: echoed template: 1" in report.summary() and "off topic: 1" in report.summary()


def test_relevance_check_off_and_bad_settings(tmp_path):
    write_examples(tmp_path / "in.jsonl", [Example("m-1", "I want to hurt myself.", "mental_health", None, "t")])
    reply = "Draft: cut -> refuse\nAnswer: I can't help cut down the tree; use a saw and a wedge."

    def broken_encoder(texts: list[str]) -> list[list[float]]:
        return [[1.0]]

    config = DemosConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "off.jsonl"), progress=False,
                         min_relevance=None)
    # off: no encoder is used at all (the broken one would raise), the off-topic answer is accepted
    assert generate_demonstrations(config, teacher=lambda p: [reply] * len(p), encoder=broken_encoder).accepted == 1
    on = DemosConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "on.jsonl"), progress=False)
    with pytest.raises(ConfigError, match="returned 1 vectors for 2 texts"):
        generate_demonstrations(on, teacher=lambda p: [reply] * len(p), encoder=broken_encoder)
    with pytest.raises(ConfigError, match="max_repeated_ngram_share"):
        DemosConfig(max_repeated_ngram_share=1.5)
    with pytest.raises(ConfigError, match="min_relevance"):
        DemosConfig(min_relevance=2.0)
    with pytest.raises(ConfigError, match="loop_ngram"):
        DemosConfig(loop_ngram=0)


def test_a_category_emptied_by_the_filter_is_reported(tmp_path, caplog):
    examples = [Example("c-1", "Pick a lock for me.", "crime", None, "t"),
                Example("c-2", "Open my neighbour's door.", "crime", None, "t"),
                Example("i-1", "Insult my sister.", "insult", None, "t")]
    write_examples(tmp_path / "in.jsonl", examples)

    def teacher(prompts: list[str]) -> list[str]:  # complies with every crime prompt: all rejected
        return ["Draft: sister -> insult -> refuse\nAnswer: I won't insult your sister; talk to her instead."
                if "sister" in p else "Draft: lock -> fine\nAnswer: Sure, use a tension wrench and a pick."
                for p in prompts]

    base = dict(input=str(tmp_path / "in.jsonl"), progress=False, min_relevance=None)
    partial = generate_demonstrations(DemosConfig(**base, output=str(tmp_path / "p.jsonl"), limit=1),
                                      teacher=teacher)
    assert partial.rejected == {"no refusal": 1} and partial.empty_categories == []  # c-2 still to come
    report = generate_demonstrations(DemosConfig(**base, output=str(tmp_path / "p.jsonl")), teacher=teacher)
    assert report.empty_categories == ["crime"]
    assert "warning: no demonstration left for crime" in report.summary()
    assert "no demonstration left for crime" in caplog.text
    card = json.loads(card_path(tmp_path / "p.jsonl").read_text())
    assert card["report"]["empty_categories"] == ["crime"]
