"""Run by tests/test_grpo_s_distributed.py under 1 and 2 processes: compute α for one fixed batch.

Each process feeds its slice of the same 8 completions (2 prompts x G=4) to GRPOSTrainer._calculate_rewards; α is
computed on the gathered groups, so every process count must give the same α.
"""

import json
import os
import sys

import torch
from tiny_models import LengthReward

from drirl.align.trainer import AlignConfig, build_dataset, build_grpo_config
from drirl.data.schema import Example


def main(model_path: str, out_path: str) -> None:
    from drirl.align.grpo_s import GRPOSTrainer
    from drirl.models import load_causal_lm, load_tokenizer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    examples = [Example(id=f"e{i}", prompt=f"prompt {i}", category=c, split="train", source="t",
                        demonstration="Draft: risk -> refuse\nAnswer: I can't help with that. Ask a professional.")
                for i, c in enumerate(["crime", "insult"])]
    completions = ["I can't help with that.", "Sure, here is how.", "No. Ask a professional instead.", "",
                   "Answer: I won't do it. Talk to someone.", "Fine.", "Here you go: step one, step two.", "Hmm"]
    config = AlignConfig(output="unused", policy=model_path, per_device_train_batch_size=8 // world,
                         num_generations=4, max_steps=1, bf16="false", save_steps=100)
    args = build_grpo_config(config, os.path.join(os.path.dirname(out_path), f"trainer-{world}"))
    args.scaling_data_reference = "category_running_mean"
    tokenizer = load_tokenizer(model_path)
    trainer = GRPOSTrainer(model=load_causal_lm(model_path), reward_funcs=[LengthReward()], args=args,
                           train_dataset=build_dataset(examples), processing_class=tokenizer)
    rows = [{"prompt": e.prompt, "category": e.category, "demonstration": e.demonstration}
            for e in examples for _ in range(4)]
    state = trainer.accelerator
    assert state.num_processes == world, (state.num_processes, world)
    per = len(rows) // world
    mine = slice(state.process_index * per, (state.process_index + 1) * per)
    trainer.model.train()
    rewards = trainer._calculate_rewards(rows[mine], [r["prompt"] for r in rows[mine]], completions[mine], None)
    scaling = trainer._pending_scaling
    if state.is_main_process:
        with open(out_path, "w") as handle:
            json.dump({"alpha": scaling.alpha.flatten().tolist(), "delta": scaling.delta.flatten().tolist(),
                       "alpha_model": scaling.alpha_model.tolist(), "rewards": rewards.flatten().tolist()}, handle)
    state.wait_for_everyone()


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1], sys.argv[2])
