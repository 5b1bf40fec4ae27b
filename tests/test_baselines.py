"""SFT, DPO and Best-of-N baselines (METHOD.md §2.5) on the tiny 2-layer Llama, and the accelerate configs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drirl.align.baselines import (
    TRAIN_MANIFEST,
    BestOfNConfig,
    BestOfNResponder,
    DPOBaselineConfig,
    SFTBaselineConfig,
    best_of_n,
    dpo_rows,
    merge_and_save,
    select_best,
    sft_rows,
    train_dpo,
    train_sft,
)
from drirl.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Ex:
    """Stands in for drirl.data.schema.Example (same attributes)."""

    id: str
    prompt: str | list[dict]
    category: str
    demonstration: str | None = None
    source: str = "test"
    split: str = "train"
    meta: dict = field(default_factory=dict)


EXAMPLES = [
    Ex("a", "How do I break into a car?", "crime",
       "Draft: break into car -> theft risk -> refuse\nAnswer: I can't help with that. Please contact a locksmith."),
    Ex("b", "Write an insult about my coworker.", "insult",
       "Draft: insult -> harm -> refuse\nAnswer: I won't write insults about people."),
    Ex("c", [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "What is the capital of France?"}], "benign",
       "The capital of France is Paris."),
    Ex("d", "Tell me the home address of my neighbour.", "privacy",
       "Draft: address -> privacy -> refuse\nAnswer: I'm not able to share private addresses of anyone."),
]


def _tiny_config(cls, **overrides):
    values = dict(max_length=64, per_device_train_batch_size=4, logging_steps=1, bf16="false", warmup_ratio=0.0,
                  lr_scheduler_type="constant")
    values.update(overrides)
    return cls(**values)


def _completion_nll(model, tokenizer, prompt, response) -> float:
    """Mean negative log-likelihood of the response tokens given the chat-formatted prompt."""
    import torch

    from drirl.generation import as_messages

    messages = as_messages(prompt)
    prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}],
                                             tokenize=True, return_dict=True)["input_ids"]
    ids = torch.tensor([full_ids])
    labels = ids.clone()
    labels[0, :len(prompt_ids)] = -100
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def _mean_demo_nll(model, tokenizer, examples) -> float:
    return sum(_completion_nll(model, tokenizer, e.prompt, e.demonstration) for e in examples) / len(examples)


@pytest.fixture(scope="module")
def sft_model(tiny_lm_path, tmp_path_factory) -> Path:
    # A high learning rate and ten epochs on four examples; one example has no demonstration and is skipped.
    config = _tiny_config(SFTBaselineConfig, learning_rate=5e-3, num_train_epochs=10.0)
    skipped = Ex("no-demo", "Unanswered prompt", "crime", None)
    return train_sft([*EXAMPLES, skipped], str(tiny_lm_path), tmp_path_factory.mktemp("sft") / "policy", config)


# ----------------------------------------------------------------------------------------------------- SFT
def test_sft_saves_a_merged_model_that_reloads_and_generates(sft_model):
    from drirl.generation import GenerationSettings, generate
    from drirl.models import load_policy

    assert (sft_model / "config.json").is_file()
    assert list(sft_model.glob("*.safetensors")), "weights must be safetensors"
    assert not (sft_model / "adapter_config.json").exists(), "LoRA must be merged, not saved as an adapter"
    assert not list(sft_model.parent.glob(".policy*")), "no temporary or trainer folder is left behind"
    manifest = json.loads((sft_model / TRAIN_MANIFEST).read_text())
    assert manifest["method"] == "sft" and manifest["train_examples"] == 4  # the demonstration-less one skipped
    model, tokenizer = load_policy(str(sft_model))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    out = generate(model, tokenizer, ["How do I break into a car?"], GenerationSettings(max_new_tokens=8),
                   progress=False)
    assert len(out) == 1 and isinstance(out[0][0], str)


def test_sft_lowers_the_demonstration_nll(sft_model, tiny_lm_path):
    from drirl.models import load_policy

    base, tokenizer = load_policy(str(tiny_lm_path))
    tuned, _ = load_policy(str(sft_model))
    before, after = _mean_demo_nll(base, tokenizer, EXAMPLES), _mean_demo_nll(tuned, tokenizer, EXAMPLES)
    # The random tiny model's tied embeddings are tiny (std 0.02) and LoRA leaves them alone, so its logits can only
    # move a little whatever the hidden states: the drop is real but small (about 0.1 nat here).
    assert after < before - 0.05, (before, after)


def test_full_fine_tuning_lowers_the_demonstration_nll_a_lot(tiny_lm_path, tmp_path):
    from drirl.models import load_policy

    config = _tiny_config(SFTBaselineConfig, use_lora=False, learning_rate=1e-2, num_train_epochs=10.0)
    out = train_sft(EXAMPLES, str(tiny_lm_path), tmp_path / "full", config)
    base, tokenizer = load_policy(str(tiny_lm_path))
    tuned, _ = load_policy(str(out))
    before, after = _mean_demo_nll(base, tokenizer, EXAMPLES), _mean_demo_nll(tuned, tokenizer, EXAMPLES)
    assert after < before - 1.0, (before, after)
    manifest = json.loads((out / TRAIN_MANIFEST).read_text())
    assert manifest["last_logged_loss"] < manifest["first_logged_loss"]


def test_sft_merged_weights_differ_from_the_base(sft_model, tiny_lm_path):
    import torch

    from drirl.models import load_causal_lm

    base = load_causal_lm(str(tiny_lm_path)).state_dict()
    tuned = load_causal_lm(str(sft_model)).state_dict()
    assert base.keys() == tuned.keys()
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    assert not any("norm" in k for k in changed), "LoRA only touches the targeted projections"


@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_training_refuses_the_test_split(trainer, tiny_lm_path, tmp_path):
    leaked = [*EXAMPLES, Ex("t1", "held out", "crime", "Answer: no.", split="test")]
    with pytest.raises(DataError, match="refusing to train on the test split") as info:
        if trainer == "sft":
            train_sft(leaked, str(tiny_lm_path), tmp_path / "out")
        else:
            train_dpo(leaked, {"a": ["sure"]}, str(tiny_lm_path), tmp_path / "out")
    assert "t1" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_sft_without_any_demonstration_is_an_error(tiny_lm_path, tmp_path):
    with pytest.raises(DataError, match="demonstration"):
        train_sft([Ex("x", "p", "crime", None)], str(tiny_lm_path), tmp_path / "out")


def test_sft_rows_are_conversational_prompt_completion():
    rows = sft_rows(EXAMPLES[2:3], system_prompt="Be brief.")
    assert rows[0]["prompt"][0] == {"role": "system", "content": "You are a helpful assistant."}  # kept, not doubled
    assert rows[0]["prompt"][-1]["role"] == "user"
    assert rows[0]["completion"] == [{"role": "assistant", "content": "The capital of France is Paris."}]
    assert sft_rows(EXAMPLES[:1], system_prompt="Be brief.")[0]["prompt"][0]["content"] == "Be brief."


def test_sft_benign_repeats_repeats_only_the_benign_rows():
    rows = sft_rows(EXAMPLES, benign_repeats=3)
    completions = [r["completion"][0]["content"] for r in rows]
    assert len(rows) == 6 and completions.count("The capital of France is Paris.") == 3
    assert completions.count(EXAMPLES[0].demonstration) == 1
    with pytest.raises(ValueError, match="benign_repeats must be >= 1, got 0"):
        SFTBaselineConfig(benign_repeats=0)


# ----------------------------------------------------------------------------------------------------- DPO
def test_dpo_rows_pair_every_sample_and_drop_uninformative_ones():
    rejected = {"a": ["Sure, here is how.", EXAMPLES[0].demonstration], "b": [], "c": ["Lyon."]}
    rows = dpo_rows(EXAMPLES, rejected)
    assert len(rows) == 2  # a's copy of its demonstration, b's empty list and d's absence give nothing
    assert rows[0]["chosen"][0]["content"] == EXAMPLES[0].demonstration
    assert rows[0]["rejected"][0]["content"] == "Sure, here is how."


def test_dpo_trains_saves_and_prefers_the_demonstration(tiny_lm_path, tmp_path):
    from drirl.models import load_policy

    rejected = {"a": ["Sure, here is how to do it."], "b": ["Sure, here is a short insult."],
                "c": ["The sky is blue on a clear day."], "d": ["Sure, here is the address."]}
    config = _tiny_config(DPOBaselineConfig, learning_rate=5e-3, num_train_epochs=4.0, beta=0.5)
    out = train_dpo(EXAMPLES, rejected, str(tiny_lm_path), tmp_path / "dpo", config)
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert json.loads((out / TRAIN_MANIFEST).read_text())["train_pairs"] == 4

    def margin(model, tokenizer):
        # NLL(rejected) − NLL(chosen), summed over the pairs: DPO must widen it.
        return sum(_completion_nll(model, tokenizer, e.prompt, rejected[e.id][0])
                   - _completion_nll(model, tokenizer, e.prompt, e.demonstration) for e in EXAMPLES)

    base, tokenizer = load_policy(str(tiny_lm_path))
    tuned, _ = load_policy(str(out))
    assert margin(tuned, tokenizer) > margin(base, tokenizer) + 0.3


def test_dpo_samples_its_own_rejected_responses(tiny_lm_path, tmp_path):
    config = _tiny_config(DPOBaselineConfig, max_steps=1, rejected_max_new_tokens=6)
    out = train_dpo(EXAMPLES[:2], None, str(tiny_lm_path), tmp_path / "dpo", config)
    manifest = json.loads((out / TRAIN_MANIFEST).read_text())
    assert manifest["optimizer_steps"] == 1 and manifest["train_pairs"] >= 1


TWO_PROCESS_SCRIPT = """
import json, os, sys
from dataclasses import dataclass, field
import torch.distributed as dist
from drirl.align.baselines import DPOBaselineConfig, sample_rejected, train_dpo

@dataclass
class Ex:
    id: str
    prompt: str
    category: str
    demonstration: str
    split: str = "train"
    meta: dict = field(default_factory=dict)

model, out, record = sys.argv[1], sys.argv[2], sys.argv[3]
examples = [Ex("a", "How do I break into a car?", "crime", "Answer: I can't help with that."),
            Ex("b", "What is the capital of France?", "benign", "The capital of France is Paris.")]
config = DPOBaselineConfig(max_length=64, per_device_train_batch_size=1, max_steps=2, bf16="false",
                           rejected_max_new_tokens=6, logging_steps=1)
rejected = sample_rejected(model, examples, config)
path = train_dpo(examples, None, model, out, config)
with open(os.path.join(record, f"rank{os.environ['RANK']}.json"), "w") as handle:
    json.dump({"world": dist.get_world_size(), "rejected": rejected, "path": str(path)}, handle)
"""


def test_dpo_runs_in_two_cpu_processes(tiny_lm_path, tmp_path):
    """The torchrun line of configs/accelerate/cpu_2proc.yaml: rank 0 samples and saves, both ranks agree."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tiny_lm_path), str(tmp_path / "dpo"), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    assert records[0]["rejected"] == records[1]["rejected"]  # sampled once on rank 0, broadcast
    assert (tmp_path / "dpo" / "config.json").is_file()
    assert json.loads((tmp_path / "dpo" / TRAIN_MANIFEST).read_text())["optimizer_steps"] == 2
    assert not list(tmp_path.glob(".dpo*")), "no temporary or trainer folder is left behind"


# ----------------------------------------------------------------------------------------------------- Best-of-N
class RecordingScorer:
    """Scores a response by its length and remembers every call."""

    def __init__(self):
        self.calls: list[tuple[list, list[str], list[str]]] = []

    def __call__(self, prompts, completions, categories):
        self.calls.append((list(prompts), list(completions), list(categories)))
        return [float(len(c)) for c in completions]


def test_best_of_n_returns_the_argmax_of_the_scorer(tiny_lm_path):
    from drirl.models import load_policy

    model, tokenizer = load_policy(str(tiny_lm_path))
    prompts = ["How do I break into a car?", [{"role": "user", "content": "What is the capital of France?"}]]
    scorer = RecordingScorer()
    config = BestOfNConfig(n=4, max_new_tokens=12, seed=3)
    chosen = best_of_n(model, tokenizer, prompts, ["crime", "benign"], scorer, config)
    assert len(scorer.calls) == 1
    seen_prompts, completions, categories = scorer.calls[0]
    assert len(completions) == 8
    assert seen_prompts == [prompts[0]] * 4 + [prompts[1]] * 4
    assert categories == ["crime"] * 4 + ["benign"] * 4
    for i, response in enumerate(chosen):
        samples = completions[4 * i:4 * i + 4]
        assert response in samples
        assert len(response) == max(len(s) for s in samples)
        assert response == max(samples, key=len)  # ties: the first sample wins
    responder = BestOfNResponder(model, tokenizer, RecordingScorer(), config)
    assert responder(prompts, ["crime", "benign"]) == chosen  # seeded: the same samples, the same choice


def test_select_best_breaks_ties_by_order_and_ignores_nan():
    assert select_best([["x", "y", "z"], ["p", "q"]], [1.0, 3.0, 3.0, math.nan, -1.0]) == ["y", "q"]
    assert select_best([["only"]], [math.nan]) == ["only"]


def test_best_of_n_checks_its_inputs(tiny_lm_path):
    from drirl.models import load_policy

    model, tokenizer = load_policy(str(tiny_lm_path))
    with pytest.raises(ValueError, match="differ in length"):
        best_of_n(model, tokenizer, ["a", "b"], ["crime"], RecordingScorer())
    with pytest.raises(ValueError, match="scores"):
        best_of_n(model, tokenizer, ["a"], ["crime"], lambda p, c, k: [0.0],
                  BestOfNConfig(n=2, max_new_tokens=2))
    with pytest.raises(ValueError):
        BestOfNConfig(n=0)


def test_merge_and_save_keeps_a_plain_model_as_is(tiny_lm_path, tmp_path):
    import torch

    from drirl.models import load_policy

    model, tokenizer = load_policy(str(tiny_lm_path))
    out = merge_and_save(model, tokenizer, tmp_path / "copy", dtype=torch.bfloat16)
    reloaded, _ = load_policy(str(out))
    assert next(reloaded.parameters()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------- accelerate
@pytest.mark.parametrize("name, distributed_type, num_processes", [
    ("single_gpu", "NO", 1), ("multi_gpu", "MULTI_GPU", 8), ("deepspeed_zero2", "DEEPSPEED", 8),
    ("deepspeed_zero3", "DEEPSPEED", 8), ("fsdp", "FSDP", 8), ("cpu_2proc", "MULTI_CPU", 2),
])
def test_accelerate_configs_load(name, distributed_type, num_processes):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert config.distributed_type.value == distributed_type
    assert config.num_processes == num_processes
    assert config.use_cpu is (name == "cpu_2proc")
    assert config.mixed_precision == ("no" if name == "cpu_2proc" else "bf16")
    text = path.read_text()
    assert text.startswith("#")
    assert f"accelerate launch --config_file configs/accelerate/{name}.yaml -m drirl.cli" in text
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
        assert config.deepspeed_config["offload_optimizer_device"] == "none"
        assert config.deepspeed_config["offload_param_device"] == "none"
    if name == "fsdp":
        fsdp = config.fsdp_config
        assert fsdp["fsdp_reshard_after_forward"] == "FULL_SHARD"
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert fsdp["fsdp_use_orig_params"] is True and fsdp["fsdp_sync_module_states"] is True


def test_lora_top_layers_limits_adapters_to_the_last_layers(tiny_lm_path):
    from transformers import AutoConfig

    from drirl.align.baselines import SFTBaselineConfig, _lora_config

    layers = AutoConfig.from_pretrained(tiny_lm_path).num_hidden_layers
    assert _lora_config(SFTBaselineConfig(lora_top_layers=1), str(tiny_lm_path)).layers_to_transform == [layers - 1]
    assert _lora_config(SFTBaselineConfig(), str(tiny_lm_path)).layers_to_transform is None


# ----------------------------------------------------------------------------------------------------- DPO-S
def test_weighted_pair_loss_slices_pairs_the_trl_way():
    """TRL lays a batch of n pairs out as [chosen_0..n−1, rejected_0..n−1]; pair i is rows i and n+i. With a loss that
    reads its rows, Σ α_i ℓ_i / n must come out of the right slices, trailing padding dropped."""
    import torch

    from drirl.align.baselines import weighted_pair_loss

    # chosen_0 = [1, 2], chosen_1 = [3, 0(pad)], rejected_0 = [5, 0(pad)], rejected_1 = [7, 8]; pair 1's slice keeps
    # both columns (rejected_1 uses two), pair 0's too (chosen_0 uses two).
    inputs = {"input_ids": torch.tensor([[1, 2, 0], [3, 0, 0], [5, 0, 0], [7, 8, 0]]),
              "attention_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]])}
    widths = []

    def pair_loss(batch):  # mean over the batch's pairs of (sum of chosen ids − sum of rejected ids)
        widths.append(batch["input_ids"].shape[1])
        n = batch["input_ids"].shape[0] // 2
        sums = (batch["input_ids"] * batch["attention_mask"]).sum(dim=1).float()
        return (sums[:n] - sums[n:]).mean()

    # ℓ_0 = 3 − 5 = −2, ℓ_1 = 3 − 15 = −12; α = [0.5, 2]: (0.5·(−2) + 2·(−12)) / 2 = −12.5
    loss = weighted_pair_loss(pair_loss, inputs, torch.tensor([0.5, 2.0]))
    assert loss.item() == pytest.approx(-12.5)
    assert widths == [2, 2]
    # Equal weights: one call on the whole batch, TRL's mean times the weight: 3·(−2 − 12)/2 = −21.
    widths.clear()
    assert weighted_pair_loss(pair_loss, inputs, torch.tensor([3.0, 3.0])).item() == pytest.approx(-21.0)
    assert widths == [3]


def _dpo_s_trainer(tiny_lm_path, tmp_path, weights):
    from datasets import Dataset
    from trl import DPOConfig

    from drirl.align.baselines import PAIR_WEIGHT, _dpo_s_trainer_class, _lora_config, _training_arguments
    from drirl.align.baselines import _load_for_training as load

    config = _tiny_config(DPOBaselineConfig, per_device_train_batch_size=len(weights))
    rejected = {"a": ["Sure, here is how."], "b": ["Fine: you are dull."], "c": ["Lyon."], "d": ["12 Elm Street."]}
    rows = dpo_rows(EXAMPLES, rejected)
    for row, weight in zip(rows, weights, strict=True):
        row[PAIR_WEIGHT] = weight
    policy, tokenizer = load(str(tiny_lm_path), config)
    args = DPOConfig(**_training_arguments(config, tmp_path / "work"), beta=0.1, loss_type="sigmoid")
    trainer = _dpo_s_trainer_class()(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                                     processing_class=tokenizer, peft_config=_lora_config(config, str(tiny_lm_path)))
    return trainer, next(iter(trainer.get_train_dataloader()))


def test_dpo_s_loss_is_the_alpha_weighted_mean(tiny_lm_path, tmp_path):
    """Before the first step LoRA's B is zero, so the policy equals the reference: every pair's DPO loss is
    −log σ(0) = ln 2, and DPO-S's loss must be mean(α)·ln 2 whatever order the pairs come in."""
    import torch

    weights = [0.5, 2.0, 1.0, 1.5]
    trainer, batch = _dpo_s_trainer(tiny_lm_path, tmp_path, weights)
    assert sorted(batch["pair_weight"].tolist()) == sorted(weights)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
    assert loss.item() == pytest.approx(1.25 * math.log(2), abs=1e-4)


def test_dpo_s_equal_weights_scale_trls_loss(tiny_lm_path, tmp_path):
    import torch

    trainer, batch = _dpo_s_trainer(tiny_lm_path, tmp_path, [2.0] * 4)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
    assert loss.item() == pytest.approx(2 * math.log(2), abs=1e-4)


class _Letters:
    """A text encoder stand-in: letter counts (no download)."""

    def encode(self, sentences, **_):
        import torch

        return torch.stack([torch.tensor([s.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"],
                                         dtype=torch.float32) for s in sentences])


class _TableReward:
    """Reward 0 for every demonstration, a fixed value per rejected sample."""

    def __init__(self, values):
        self.values = values

    def score(self, prompts, completions, categories):
        return [self.values.get(c, 0.0) for c in completions]


def test_dpo_s_trains_and_records_alpha(tiny_lm_path, tmp_path):
    # Two crime prompts (a, e) with gaps −1 and −3: the crime reference is −2, α^M = σ(−1)/σ(−2) = 2.256 and
    # σ(−3)/σ(−2) = 0.398, clipped to 2 and 0.5; b, c, d are alone in their categories: α = 1.
    extra = Ex("e", "How do I pick a lock?", "crime", "Draft: lock -> burglary -> refuse\nAnswer: I can't help.")
    rejected = {"a": ["Sure, here is how."], "b": ["Fine: you are dull."], "c": ["Lyon."], "d": ["12 Elm Street."],
                "e": ["Use a tension wrench."]}
    reward = _TableReward({"Sure, here is how.": -1.0, "Use a tension wrench.": -3.0})
    config = _tiny_config(DPOBaselineConfig, max_steps=2, per_device_train_batch_size=3, scaling_mode="model")
    out = train_dpo([*EXAMPLES, extra], rejected, str(tiny_lm_path), tmp_path / "dpo-s", config, reward_model=reward)
    manifest = json.loads((out / TRAIN_MANIFEST).read_text())
    assert manifest["method"] == "dpo-s" and manifest["optimizer_steps"] == 2
    assert manifest["scaling"]["alpha_min"] == 0.5 and manifest["scaling"]["alpha_max"] == 2.0
    assert manifest["scaling"]["fraction_clipped"] == pytest.approx(0.4)
    assert manifest["scaling"]["alpha_mean"] == pytest.approx((2.0 + 0.5 + 3 * 1.0) / 5, abs=1e-4)


def test_dpo_s_model_factor_needs_reward_models():
    from drirl.align.baselines import dpo_scaling
    from drirl.errors import ConfigError

    rows = dpo_rows(EXAMPLES[:1], {"a": ["Sure."]})
    with pytest.raises(ConfigError) as info:
        dpo_scaling(rows, ["crime"], DPOBaselineConfig(scaling_mode="both"), text_encoder=_Letters())
    assert info.value.key == "reward_models"


def test_dpo_s_data_factor_uses_the_text_encoder(tiny_lm_path):
    from drirl.align.baselines import dpo_scaling

    rows = dpo_rows(EXAMPLES[:2], {"a": ["Sure, here is how.", "I can't help with that."], "b": ["No."]})
    config = DPOBaselineConfig(scaling_mode="data", scaling_sharpness=4.0)
    scaling = dpo_scaling(rows, ["crime", "crime", "insult"], config, text_encoder=_Letters())
    alpha = scaling.alpha.tolist()
    # Within crime, the sample that echoes the demonstration's refusal is easier (δ lower) than "Sure, here is how."
    assert alpha[0] > 1.0 > alpha[1]
    assert alpha[2] == pytest.approx(1.0)  # alone in its category


@pytest.mark.parametrize(("overrides", "key"), [
    ({"alpha_min": -1.0}, "alpha_min"), ({"lora_r": 0}, "lora_r"), ({"scaling_delta_on": "draft"}, "scaling_delta_on"),
    ({"reward_fallback": "zero"}, "reward_fallback")])
def test_dpo_config_checks_its_scaling_and_lora_fields(overrides, key):
    from drirl.config import config_from_dict
    from drirl.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_from_dict(DPOBaselineConfig, overrides, source="dpo.yaml")
    assert info.value.key == key
    assert DPOBaselineConfig().scaling_mode == "none"  # plain DPO unless asked
