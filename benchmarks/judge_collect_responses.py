"""Collect real model outputs on the bundled test prompts, the raw material of the judge's labelled set.

Writes JSONL rows {prompt, response, category, borderline, source} for: the base SmolLM2-135M-Instruct (greedy),
then, when ``--sft`` names a model folder (or ``--train_sft`` trains one at the demo's `sft:` settings, optionally
capped at ``--sft_max_steps``), that SFT model (greedy), then the base model sampled at temperature 0.8. The rows are
unlabelled; labels are added by hand.

    PYTHONPATH=src python benchmarks/judge_collect_responses.py --out /tmp/responses.jsonl --train_sft /tmp/sft
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _generate(model_ref: str, prompts: list, sample: bool, max_new_tokens: int) -> list[str]:
    from drirl.generation import GenerationSettings, generate
    from drirl.models import load_policy

    model, tokenizer = load_policy(model_ref)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=sample, temperature=0.8, top_p=0.95,
                                  batch_size=32, seed=1)
    # fp32: on a busy CPU bf16 autocast measured slower here, and fp32 outputs do not depend on the CPU kind.
    outputs = generate(model, tokenizer, [p.prompt for p in prompts], settings, bf16=False)
    return [out[0] if out else "" for out in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--sft", default=None, help="an SFT model folder to sample as well")
    parser.add_argument("--train_sft", default=None, help="train an SFT model at the demo's settings into this folder")
    parser.add_argument("--max_new_tokens", type=int, default=80)
    parser.add_argument("--sft_max_steps", type=int, default=-1,
                        help="cap the SFT optimizer steps (the demo's epoch is 88 steps of 8 rows)")
    args = parser.parse_args()

    from drirl.data.schema import load_bundled

    examples = load_bundled()
    test = [e for e in examples if e.split == "test"]
    out = Path(args.out)
    with out.open("w", encoding="utf-8") as handle:
        _write(handle, "smollm2-135m-instruct/greedy", test, _generate(args.base, test, False, args.max_new_tokens))
    sft = args.sft
    if args.train_sft:
        from drirl.align.baselines import SFTBaselineConfig, train_sft

        config = SFTBaselineConfig(num_train_epochs=1, learning_rate=3e-4, lora_top_layers=16, max_length=192,
                                   benign_repeats=3, seed=0, max_steps=args.sft_max_steps)
        train = [e for e in examples if e.split == "train" and e.demonstration]
        sft = str(train_sft(train, args.base, args.train_sft, config))
    with out.open("a", encoding="utf-8") as handle:
        if sft:
            _write(handle, "sft-demo/greedy", test, _generate(sft, test, False, args.max_new_tokens))
        _write(handle, "smollm2-135m-instruct/sampled", test, _generate(args.base, test, True, args.max_new_tokens))


def _write(handle, source: str, examples: list, responses: list[str]) -> None:
    for example, response in zip(examples, responses, strict=True):
        borderline = bool((example.meta or {}).get("borderline", False))
        handle.write(json.dumps({"id": example.id, "prompt": example.prompt, "response": response,
                                 "category": example.category, "borderline": borderline, "source": source},
                                ensure_ascii=False) + "\n")
    handle.flush()


if __name__ == "__main__":
    main()
