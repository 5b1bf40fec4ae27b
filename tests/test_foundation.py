"""Issue 2: config loading and errors, the model resolver, tokenizer fixes, the CLI surface."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drirl.config import ConfigError, add_config_arguments, config_from_args, help_field, load_config
from drirl.errors import ModelError
from drirl.models import fix_special_tokens, load_causal_lm, load_policy, load_tokenizer, resolve_model


@dataclass
class ToyConfig:
    model: str | None = field(default=None, metadata=help_field("the model", required=True))
    steps: int = field(default=3, metadata=help_field("steps"))
    lr: float = field(default=1e-4, metadata=help_field("learning rate"))
    names: list[str] = field(default_factory=list, metadata=help_field("names"))


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nsteps: 5\nlr: 1e-3\nnames: [a, b]\n")
    config = load_config(ToyConfig, path)
    assert (config.model, config.steps, config.lr, config.names) == ("m", 5, 1e-3, ["a", "b"])
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ToyConfig)
    args = parser.parse_args(["--steps", "9", "--names", "x,y"])
    config = config_from_args(ToyConfig, args, config_path=str(path))
    assert (config.model, config.steps, config.names) == ("m", 9, ["x", "y"])


@pytest.mark.parametrize("text, key, message", [
    ("model: m\nstepz: 5\n", "stepz", "unknown key"),
    ("model: m\nsteps: five\n", "steps", "expected an integer"),
    ("steps: 5\n", "model", "missing required field"),
])
def test_config_errors_name_key_and_file(tmp_path, text, key, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(ToyConfig, path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value) and message in str(err.value)
    assert err.value.exit_code == 2


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: m\nsteps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*invalid YAML at line"):
        load_config(ToyConfig, path)


def test_cli_bad_config_exits_2(tmp_path, capsys):
    from drirl.cli import main

    path = tmp_path / "align.yaml"
    path.write_text("max_stepz: 3\n")
    code = main(["align", "--config", str(path), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "max_stepz" in err and str(path) in err and "unknown key" in err
    assert not (tmp_path / "out").exists()


def test_every_subcommand_has_help_with_example(capsys):
    from drirl.cli import main

    for command in (["--help"], ["models", "--help"], ["data", "--help"], ["reward", "--help"], ["align", "--help"],
                    ["eval", "--help"], ["run", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "drirl" in out and ("example" in out.lower() or command == ["--help"]), command
    main_help = subprocess.run([sys.executable, "-m", "drirl.cli", "--help"], capture_output=True, text=True)
    for name in ("models", "data", "reward", "align", "eval", "run", "demo"):
        assert name in main_help.stdout


def test_resolver_local_folder_and_errors(tiny_lm_path, tmp_path):
    assert resolve_model(str(tiny_lm_path)) == str(Path(tiny_lm_path).resolve())
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="neither an existing folder"):
        resolve_model("./does/not/exist")
    assert resolve_model("org/some-model") == "org/some-model"  # a hub id passes through to from_pretrained


def test_resolver_names_the_model_inside_a_run_folder(tiny_lm_path, tmp_path):
    run = tmp_path / "policy"
    shutil.copytree(tiny_lm_path, run / "model")
    with pytest.raises(ModelError, match=rf"not a transformers model folder; the model is in {run / 'model'}$"):
        resolve_model(str(run))


def test_interrupt_says_how_to_resume(monkeypatch, capsys):
    from drirl import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_models_prepare", interrupted)
    assert cli.main(["models", "prepare"]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err


def test_pickle_weights_refused(tiny_lm_path, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_lm_path, folder)
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_causal_lm(str(folder))
    model = load_causal_lm(str(folder), allow_pickle=True)
    assert model.config.num_hidden_layers == 2


def test_tokenizer_fixes_and_reload_is_identical(tiny_lm_path, tmp_path):
    model, tokenizer = load_policy(str(tiny_lm_path))
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id == model.generation_config.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    text = "Draft: risk -> refuse\nAnswer: I can't help with that. Ünïcödé ✓"
    tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = load_tokenizer(str(tmp_path / "tok")) if (tmp_path / "tok" / "config.json").exists() else None
    from transformers import AutoTokenizer

    reloaded = reloaded or AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    messages = [{"role": "user", "content": "hi"}]
    assert reloaded.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(
        messages, tokenize=False)


def test_fix_special_tokens_prefers_unused_token(tiny_lm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_path)
    tokenizer.pad_token = tokenizer.eos_token  # the SmolLM2 situation: pad == eos
    fix_special_tokens(tokenizer)
    assert tokenizer.pad_token == "<|pad|>"


def test_hub_id_loads_from_local_cache(tiny_lm_path, tmp_path):
    """The hub path is real: a hub id resolves through the Hugging Face cache layout, offline."""
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_lm_path, snapshot)
    (cache / "models--acme--tiny" / "refs").mkdir()
    (cache / "models--acme--tiny" / "refs" / "main").write_text("0" * 40)
    code = ("from drirl.models import load_policy; m, t = load_policy('acme/tiny'); "
            "print(m.config.num_hidden_layers, t.pad_token)")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2", "<|pad|>"]


def test_text_encoder_alias():
    from drirl.models import resolve_text_encoder

    path = Path(resolve_text_encoder("minilm"))
    assert (path / "modules.json").is_file()
    with pytest.raises(ModelError):
        resolve_text_encoder("/no/such/encoder/../x y")


@pytest.mark.smollm2
def test_smollm2_conversion_cached_and_answers_paris(tmp_path, capsys):
    """The bundled GGUF converts once, is verified by checksum on reuse, and still knows its capitals."""
    from drirl.cli import main
    from drirl.generation import GenerationSettings, generate
    from drirl.models import prepare_smollm2

    path = prepare_smollm2()
    manifest = json.loads((path / "drirl-conversion.json").read_text())
    assert "model.safetensors" in manifest["files"]
    assert main(["models", "prepare", "--json"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert set(paths) == {"smollm2-135m-instruct", "minilm"} and paths["smollm2-135m-instruct"] == str(path)
    model, tokenizer = load_policy("smollm2-135m-instruct")
    answer = generate(model, tokenizer, ["What is the capital of France?"],
                      GenerationSettings(max_new_tokens=16), progress=False)[0][0]
    assert "Paris" in answer
    # transformers 5 rebuilds some tokenizers on load: a save/reload round trip must encode identically.
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    text = "Draft: risk -> refuse\nAnswer: I can't help with that. ✓ 123"
    assert AutoTokenizer.from_pretrained(tmp_path / "tok")(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_remove_temporaries_only_touches_leftovers(tmp_path):
    from drirl.io import atomic_write_text, is_temporary, remove_temporaries

    atomic_write_text(tmp_path / "kept.json", "{}")
    (tmp_path / ".kept.json.abc.tmp").write_text("half")
    (tmp_path / "sub" / ".model.xyz.tmp").mkdir(parents=True)
    (tmp_path / "sub" / "model").mkdir()
    assert is_temporary(tmp_path / ".kept.json.abc.tmp") and not is_temporary(tmp_path / "kept.json")
    assert remove_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept.json", "model", "sub"]
