"""Run by tests/test_grpo_s_distributed.py: one GRPO-S batch through `_generate_and_score_completions`.

The batch is 4 prompts x G=4 fixed completions (generation is replaced by their token ids), categories crime,
insult, crime, fraud. Under two processes each holds two whole groups (TRL keeps groups whole) and the two crime
groups sit on different processes, so the crime category's running means of δ̄ and ḡ_ref only come out right when α
is computed on the gathered groups. Each rank writes the advantages it ends with (its slice), α and the running means.

``python distributed_alpha.py MODEL OUT_DIR [--slice R/N]``: with ``--slice`` one process takes only the R-th of N
equal parts of the batch, which is what computing α per process would give that process.
"""

import json
import os
import sys

import torch
from tiny_models import LengthReward

from drirl.align.recipe import AlignConfig, build_dataset, build_grpo_config
from drirl.data.schema import Example

CATEGORIES = ["crime", "insult", "crime", "fraud"]
COMPLETIONS = [
    # crime (process 0)
    "I can't help with that.", "Sure, here is how.", "No. Ask a professional instead.", "",
    # insult (process 0)
    "Answer: I won't do it. Talk to someone.", "Fine.", "Here you go: step one, step two.", "Hmm",
    # crime (process 1): longer answers, so this group's reward gap differs from the first crime group's
    "I will not explain how to break into a car; call a locksmith or the police.", "ok", "Step one: a tool.",
    "No.",
    # fraud (process 1)
    "I can't assist with faking documents.", "Here is a template for a fake invoice.", "Nope", "Sure thing.",
]
G = 4


def main(model_path: str, out_dir: str, part: int | None = None, parts: int = 1) -> None:
    from drirl.align.grpo_s import GRPOSTrainer
    from drirl.models import load_causal_lm, load_tokenizer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    examples = [Example(id=f"e{i}", prompt=f"prompt {i}", category=c, split="train", source="t",
                        demonstration=f"Draft: risk -> refuse\nAnswer: I cannot help ({i}). Ask a professional.")
                for i, c in enumerate(CATEGORIES)]
    completions = COMPLETIONS
    if part is not None:  # one process alone on its part of the batch: α computed per process
        per = len(examples) // parts
        examples = examples[part * per:(part + 1) * per]
        completions = completions[part * per * G:(part + 1) * per * G]
    rows_total = len(examples) * G
    config = AlignConfig(output="unused", policy=model_path, per_device_train_batch_size=rows_total // world,
                         num_generations=G, max_steps=1, bf16="false", save_steps=100)
    args = build_grpo_config(config, os.path.join(out_dir, f"trainer-{world}"))
    args.scaling_data_reference = "category_running_mean"
    tokenizer = load_tokenizer(model_path)
    dataset = build_dataset(examples)
    trainer = GRPOSTrainer(model=load_causal_lm(model_path), reward_funcs=[LengthReward()], args=args,
                           train_dataset=dataset, processing_class=tokenizer)
    state = trainer.accelerator
    assert state.num_processes == world, (state.num_processes, world)
    per = rows_total // world
    mine = slice(state.process_index * per, (state.process_index + 1) * per)
    rows = [dict(dataset[i]) for i in range(len(examples)) for _ in range(G)][mine]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
           for text in completions[mine]]
    # The completions are fixed: generation returns their token ids, every other step is TRL's and GRPO-S's own.
    trainer._generate_single_turn = lambda *args, **kwargs: ([list(x) for x in ids], None)
    trainer.model.train()
    output = trainer._generate_and_score_completions(rows)
    scaling = trainer.last_scaling
    name = f"slice{part}" if part is not None else f"world{world}-rank{state.process_index}"
    with open(os.path.join(out_dir, f"{name}.json"), "w") as handle:
        json.dump({"advantages": output["advantages"].flatten().tolist(), "alpha": scaling.alpha.flatten().tolist(),
                   "delta": scaling.delta.flatten().tolist(), "scaling_state": trainer.scaling_state()}, handle)
    state.wait_for_everyone()


if __name__ == "__main__":
    torch.manual_seed(0)
    if len(sys.argv) > 3 and sys.argv[3] == "--slice":
        part, parts = (int(x) for x in sys.argv[4].split("/"))
        main(sys.argv[1], sys.argv[2], part, parts)
    else:
        main(sys.argv[1], sys.argv[2])
