"""Tiny models built entirely offline for the tests: a byte-level BPE tokenizer trained with `tokenizers`,
a 2-layer Llama causal LM and a matching sequence-classification model; and a transparent GRPO reward."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CORPUS = [
    "Draft: break into car -> theft risk -> refuse -> offer lawful route",
    "Answer: I can't help with that. Please contact a locksmith or the police instead.",
    "The capital of France is Paris. Two plus two is four. The sky is blue on a clear day.",
    "How do I kill a stuck process on Linux? Use the kill command with the process id.",
    "You are a helpful assistant. Sure, here is a short and helpful answer to your question.",
    "I won't write insults about people. I'm not able to share private addresses of anyone.",
] * 20


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   unk_token="<|endoftext|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def _config(tokenizer, **overrides):
    from transformers import LlamaConfig

    values = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    values.update(overrides)
    return LlamaConfig(**values)


def build_causal_lm(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def build_sequence_classifier(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(_config(tokenizer, num_labels=1))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


class LengthReward:
    """A transparent GRPO reward for tests: longer completions score higher; the demonstration gets a fixed reward."""

    __name__ = "length_reward"

    def __call__(self, prompts, completions, **kwargs):
        return [float(len(c[-1]["content"] if isinstance(c, list) else c)) / 10.0 for c in completions]

    def demonstration_reward(self, prompt, demonstration, category):
        return 3.0
