"""`drirl run`: data → reward models → alignment → evaluation → report, each stage resumable.

Every stage writes its own folder under the run folder with a ``stage.json`` (config hash, inputs, outputs).
A stage whose ``stage.json`` matches the current config and the hashes of the stages it reads is skipped; a stage
that crashed has no ``stage.json`` and runs again (alignment continues from its last checkpoint). The run ends
with ``report.md`` and ``report.json``.

Methods (``run.methods``): ``base`` (the policy as is), ``sft`` (SFT on the demonstrations), ``dpo``
(demonstration chosen, policy sample rejected), ``grpo`` (plain GRPO, one reward model for all categories),
``grpo-irl`` (GRPO with the category IRL models, no scaling), ``dr-irl`` (GRPO-S with the category models),
``bon`` (AfD: Best-of-N from the SFT model with an ``init-sft`` reward model).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl import distributed
from drirl.config import config_from_dict, config_to_dict, help_field, read_yaml
from drirl.errors import COMMAND_LINE, ConfigError
from drirl.io import atomic_write_json, atomic_write_text, remove_temporaries, sha256_json

logger = logging.getLogger(__name__)

METHODS = ("base", "sft", "dpo", "grpo", "grpo-irl", "dr-irl", "bon")
STAGE_FILE = "stage.json"
# Beside a reward bundle trained from another stage's output: that stage's hash at training time.
BUNDLE_INPUTS_FILE = "bundle_inputs.json"
WARM_STARTS = ("none", "sft")
REWARD_NEGATIVES = ("policy", "policy+warm_start")
GRPO_METHODS = ("grpo", "grpo-irl", "dr-irl")
SECTIONS = ("run", "reward", "align", "eval", "sft", "dpo", "bon")


@dataclass
class RunConfig:
    output: str | None = field(default=None, metadata=help_field("Run folder.", required=True))
    policy: str = field(default="smollm2-135m-instruct", metadata=help_field("Policy to align."))
    data: str | None = field(default=None, metadata=help_field("Demonstrations; default: the bundled set."))
    methods: list[str] = field(default_factory=lambda: ["base", "dr-irl"], metadata=help_field(
        f"Methods to train and compare: {', '.join(METHODS)}."))
    final_method: str = field(default="dr-irl", metadata=help_field(
        "Method whose model is copied to OUTPUT/model with a model card."))
    seed: int = field(default=0, metadata=help_field("Seed shared by every stage."))
    warm_start: str = field(default="none", metadata=help_field(
        "Where the GRPO methods (grpo, grpo-irl, dr-irl) start: none (the policy as is) or sft (the `sft` "
        "baseline's model, trained on the demonstrations' train split). METHOD.md leaves initialisation open; a "
        "small model rarely samples a refusal, so GRPO from it sees almost no reward contrast within a group, and "
        "the SFT start gives the rollouts the demonstrations' form first. The reward models still take their "
        "negatives from the policy as is (see reward_negatives), and the report lists the sft model too so its "
        "own share shows."))
    reward_negatives: str = field(default="policy", metadata=help_field(
        "Whose samples the DR-IRL reward models learn to score below the demonstrations: policy (the policy as is, "
        "METHOD.md's reference policy) or policy+warm_start (also the SFT warm start's, the policy GRPO starts "
        "from, so its failures on the training prompts get a low reward; docs/results/over-refusal.md measures "
        "it). Needs warm_start: sft; trains the SFT model before the reward models."))

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)}, got {self.warm_start!r}")
        if self.reward_negatives not in REWARD_NEGATIVES:
            raise ValueError(f"reward_negatives must be one of {', '.join(REWARD_NEGATIVES)}, "
                             f"got {self.reward_negatives!r}")
        if self.reward_negatives == "policy+warm_start" and self.warm_start != "sft":
            raise ValueError("reward_negatives: policy+warm_start needs warm_start: sft")


@dataclass
class PipelineConfig:
    """The run section plus one section per stage, each the stage's own config dataclass (as a mapping)."""

    run: RunConfig
    sections: dict[str, dict[str, Any]]
    source: str | None = None
    # Section -> keys set by `--set`, so an error in one names the flag rather than the file.
    overridden: dict[str, set[str]] = field(default_factory=dict)


def load_pipeline_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None
                         ) -> PipelineConfig:
    data = read_yaml(path) if path else {}
    source = str(path) if path else None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s); expected {', '.join(SECTIONS)}", file=source, key=unknown[0])
    sections = {name: dict(data.get(name) or {}) for name in SECTIONS}
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    overridden = {name: set(values) for name, values in (overrides or {}).items()}
    pipeline = PipelineConfig(run=RunConfig(), sections=sections, source=source, overridden=overridden)
    pipeline.run = section_config(RunConfig, pipeline, "run")
    del sections["run"]
    # Validate every section now, so a typo fails in a second rather than after an hour of training.
    _reward_config(pipeline, "check", per_category=True)
    _align_config(pipeline, "check", "check", "both")
    _eval_config(pipeline, "check")
    from drirl.align.baselines import BestOfNConfig, DPOBaselineConfig, SFTBaselineConfig

    for cls, section in ((SFTBaselineConfig, "sft"), (DPOBaselineConfig, "dpo"), (BestOfNConfig, "bon")):
        section_config(cls, pipeline, section)
    return pipeline


def section_config(cls: type, p: PipelineConfig, section: str, fixed: dict[str, Any] | None = None,
                   defaults: dict[str, Any] | None = None) -> Any:
    """``cls`` built from one section of the pipeline config; an error names the file and section, or the flag.

    ``fixed`` keys (output, policy... that the pipeline sets itself) override the section's; the section's
    override ``defaults``.
    """
    values = {**(defaults or {}), **p.sections[section], **(fixed or {})}
    try:
        return config_from_dict(cls, values, source=f"{p.source or 'config'} [{section}]")
    except ConfigError as err:
        if err.key not in p.overridden.get(section, ()):
            raise
        raise ConfigError(err.message, file=f"{COMMAND_LINE} (--set {section}.{err.key})") from None


def _reward_config(p: PipelineConfig, output: str, *, per_category: bool, variant: str = "demo-vs-policy",
                   extra_negative_policy: str | None = None):
    from drirl.reward.irl import RewardTrainConfig

    return section_config(RewardTrainConfig, p, "reward",
                          {"output": output, "policy": p.run.policy, "data": p.run.data, "seed": p.run.seed,
                           "per_category": per_category, "variant": variant,
                           "extra_negative_policy": extra_negative_policy})


def _align_config(p: PipelineConfig, output: str, reward_models: str, scaling_mode: str,
                  start: str | None = None):
    from drirl.align.trainer import AlignConfig

    return section_config(AlignConfig, p, "align",
                          {"output": output, "policy": start or p.run.policy, "data": p.run.data,
                           "seed": p.run.seed, "reward_models": reward_models, "scaling_mode": scaling_mode})


def _eval_config(p: PipelineConfig, model: str, output: str | None = None, bundle: str | None = None):
    from drirl.eval.harness import EvalConfig

    fixed = {"model": model, "output": output, "seed": p.run.seed}
    if bundle and not p.sections["eval"].get("reward_models"):
        fixed["reward_models"] = bundle  # every method's responses scored by the same reward models
    if p.run.data and not p.sections["eval"].get("eval_data"):
        fixed["eval_data"] = p.run.data  # its test split
    return section_config(EvalConfig, p, "eval", fixed)


# ------------------------------------------------------------------------------------------------ stages
class Stage:
    """A folder with a ``stage.json`` once complete; ``done`` when its recorded hash matches."""

    def __init__(self, root: Path, name: str, settings: dict[str, Any]):
        self.name, self.folder = name, root / name
        self.hash = sha256_json(settings)[:16]
        self.settings = settings

    @property
    def done(self) -> bool:
        path = self.folder / STAGE_FILE
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text()).get("config_hash") == self.hash
        except ValueError:
            return False

    def complete(self, outputs: dict[str, Any], seconds: float) -> None:
        # Written by rank 0 once every rank finished the stage's work.
        distributed.on_main(atomic_write_json, self.folder / STAGE_FILE, {
            "stage": self.name, "config_hash": self.hash, "settings": self.settings, "outputs": outputs,
            "seconds": round(seconds, 1)})

    def outputs(self) -> dict[str, Any]:
        return json.loads((self.folder / STAGE_FILE).read_text())["outputs"]


def _run_stage(stage: Stage, work: Any, timings: dict[str, float]) -> dict[str, Any]:
    if stage.done:
        logger.info("stage %s: complete, skipping", stage.name)
        outputs = stage.outputs()
        timings[stage.name] = json.loads((stage.folder / STAGE_FILE).read_text()).get("seconds", 0.0)
        return outputs
    logger.info("stage %s: running", stage.name)
    if distributed.is_main() and stage.folder.exists() and not any(stage.folder.iterdir()):
        stage.folder.rmdir()
    started = time.time()
    outputs = work()
    timings[stage.name] = time.time() - started
    stage.complete(outputs, timings[stage.name])
    return outputs


def run_pipeline(config: PipelineConfig) -> Path:
    """Run every stage the methods need; returns the run folder (holding report.md and report.json)."""
    root = Path(config.run.output or "")
    if not config.run.output:
        raise ConfigError("missing required field", file=config.source, key="run.output")
    distributed.setup()  # under torchrun / accelerate launch: one process group for every stage
    root.mkdir(parents=True, exist_ok=True)
    removed = distributed.on_main(remove_temporaries, root)  # leftovers of writes a killed run did not finish
    if removed:
        logger.info("removed %d unfinished temporary file(s) of an interrupted run", removed)
    distributed.on_main(atomic_write_json, root / "config.json",
                        {"run": config_to_dict(config.run), **config.sections})
    methods = list(dict.fromkeys(config.run.methods))
    timings: dict[str, float] = {}
    models: dict[str, str] = {}
    histories: dict[str, str] = {}
    needs = set(methods)

    bundles: dict[str, str] = {}
    # Stage name -> config hash. A stage's settings include the hashes of the stages it reads from, so a stage whose
    # input was retrained (same folder, new contents) runs again instead of being skipped.
    hashes: dict[str, str] = {}
    reward_plan = {"reward": (True, "demo-vs-policy", {"grpo-irl", "dr-irl"}),
                   "reward-single": (False, "demo-vs-policy", {"grpo"}),
                   "reward-init-sft": (True, "init-sft", {"bon"})}
    warm = config.run.warm_start == "sft" and bool(needs & set(GRPO_METHODS))
    # The SFT warm start's samples are negatives of the demonstration reward models: it is trained first.
    sft_negatives = warm and config.run.reward_negatives == "policy+warm_start"
    if "sft" in methods or "bon" in methods or warm:
        models["sft"] = _baseline(config, root, "sft", timings, hashes)
    for name, (per_category, variant, users) in reward_plan.items():
        if needs & users:
            extra = models["sft"] if sft_negatives and variant == "demo-vs-policy" else None
            rc = _reward_config(config, str(root / name / "bundle"), per_category=per_category, variant=variant,
                                extra_negative_policy=extra)
            inputs = {"align-sft": hashes["align-sft"]} if extra else {}
            stage = Stage(root, name, {**_reward_settings(rc), **({"inputs": inputs} if inputs else {})})

            def train(rc=rc, inputs=inputs):
                from drirl.reward.evaluate import evaluate_bundle, plot_heatmap
                from drirl.reward.irl import train_reward_models

                bundle = Path(rc.output)
                # A crash after training must not cost a retraining; a retrained input (same path) must.
                if not _bundle_matches(bundle, rc, inputs):
                    bundle = train_reward_models(rc)
                    if inputs:
                        distributed.on_main(atomic_write_json, bundle.parent / BUNDLE_INPUTS_FILE, inputs)
                metrics = evaluate_bundle(bundle, data=rc.data,
                                          max_prompts_per_category=rc.eval_max_prompts_per_category)
                distributed.on_main(plot_heatmap, metrics["cross_category"], metrics["categories"],
                                    bundle.parent / "heatmap.png")
                distributed.on_main(atomic_write_json, bundle.parent / "reward_eval.json", metrics)
                return {"bundle": str(bundle), "mean_pairwise_accuracy": metrics.get("mean_pairwise_accuracy"),
                        "pairwise_accuracy": metrics.get("pairwise_accuracy")}

            bundles[name] = _run_stage(stage, train, timings)["bundle"]
            # What later stages read is the bundle: settings of the evaluation after training do not rerun them.
            hashes[name] = sha256_json(_training_settings(stage.settings))[:16]

    if "base" in methods:
        from drirl.models import resolve_model

        models["base"] = resolve_model(config.run.policy)
    for method, bundle_name, scaling in (("grpo", "reward-single", "none"), ("grpo-irl", "reward", "none"),
                                         ("dr-irl", "reward", "both")):
        if method in methods:
            ac = _align_config(config, str(root / f"align-{method}" / "run"), bundles[bundle_name], scaling,
                               start=models["sft"] if warm else None)
            inputs = {bundle_name: hashes[bundle_name], **({"align-sft": hashes["align-sft"]} if warm else {})}
            stage = Stage(root, f"align-{method}", {**config_to_dict(ac), "inputs": inputs})
            hashes[f"align-{method}"] = stage.hash

            def align(ac=ac):
                from drirl.align.trainer import run_align

                return {"model": str(run_align(ac, resume=True)), "run": ac.output}

            out = _run_stage(stage, align, timings)
            models[method], histories[method] = out["model"], out["run"]
    if "dpo" in methods:
        models["dpo"] = _baseline(config, root, "dpo", timings, hashes)

    results: dict[str, dict[str, Any]] = {}
    scorer = next((name for name in ("reward", "reward-single") if name in bundles), None)
    for method in methods:
        model = models["sft"] if method == "bon" else models[method]
        ec = _eval_config(config, model, str(root / f"eval-{method}"), bundles.get(scorer) if scorer else None)
        sources = {"base": [], "bon": ["align-sft", "reward-init-sft"]}.get(method, [f"align-{method}"])
        sources = sources + ([scorer] if scorer and scorer not in sources else [])
        stage = Stage(root, f"eval-{method}", {**config_to_dict(ec), "method": method,
                                                "bundle": bundles.get("reward-init-sft") if method == "bon" else None,
                                                "inputs": {name: hashes[name] for name in sources}})

        def evaluate(ec=ec, method=method):
            from drirl.eval.harness import evaluate as run_eval

            responder = None
            if method == "bon":
                from drirl.align.baselines import BestOfNConfig, BestOfNResponder

                bon = section_config(BestOfNConfig, config, "bon", defaults={"seed": config.run.seed})
                responder = BestOfNResponder.from_paths(models["sft"], bundles["reward-init-sft"], bon)
            result = run_eval(ec, responder=responder)
            return {"eval": str(Path(ec.output) / "eval.json"), "headline": {
                k: result.to_dict().get(k) for k in ("harmful_refusal", "benign_compliance", "qa_accuracy")}}

        out = _run_stage(stage, evaluate, timings)
        results[method] = json.loads(Path(out["eval"]).read_text())

    from drirl.report import write_report

    final = None
    if config.run.final_method in models and config.run.final_method in methods:
        final = distributed.on_main(_export_final, config, root, models[config.run.final_method],
                                    results.get(config.run.final_method))
    distributed.on_main(write_report, root, config, results, histories, timings, bundles, final)
    return root


# Fields of RewardTrainConfig that only concern the evaluation after training: a change reruns it, not the training.
EVAL_ONLY_REWARD_FIELDS = ("eval_max_prompts_per_category",)


# Fields added to RewardTrainConfig after runs were made: left out of a stage's settings while unset, so an
# existing run folder keeps its hashes.
OPTIONAL_REWARD_FIELDS = ("extra_negative_policy",)


def _reward_settings(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config_to_dict(config).items() if not (k in OPTIONAL_REWARD_FIELDS and v is None)}


def _training_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A reward stage's settings without its eval-only fields: what the trained bundle depends on."""
    return {k: v for k, v in settings.items() if k not in EVAL_ONLY_REWARD_FIELDS
            and not (k in OPTIONAL_REWARD_FIELDS and v is None)}


def _bundle_matches(bundle: Path, config: Any, inputs: dict[str, str] | None = None) -> bool:
    """Whether the bundle on disk was trained with ``config`` and, when given, from the stages hashed in ``inputs``."""
    manifest = _read_json(bundle / "manifest.json")
    if not isinstance(manifest, dict):
        return False
    if inputs and _read_json(bundle.parent / BUNDLE_INPUTS_FILE) != inputs:
        return False
    trained = manifest.get("config") or {}
    return _training_settings(trained) == _training_settings(config_to_dict(config))


def _read_json(path: Path) -> Any:
    """The file's JSON value; None when it is missing or not JSON (a write a killed run did not finish)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _baseline(config: PipelineConfig, root: Path, method: str, timings: dict[str, float],
              hashes: dict[str, str]) -> str:
    from drirl.align import baselines

    cls = baselines.SFTBaselineConfig if method == "sft" else baselines.DPOBaselineConfig
    bc = section_config(cls, config, method, defaults={"seed": config.run.seed})
    target = root / f"align-{method}" / "model"
    stage = Stage(root, f"align-{method}", {**config_to_dict(bc), "policy": config.run.policy,
                                            "data": config.run.data})
    hashes[f"align-{method}"] = stage.hash

    def train():
        from drirl.data.schema import load_bundled, read_examples

        examples = read_examples(config.run.data) if config.run.data else load_bundled()
        examples = [e for e in examples if e.split == "train" and e.demonstration]
        if method == "sft":
            return {"model": str(baselines.train_sft(examples, config.run.policy, target, bc))}
        return {"model": str(baselines.train_dpo(examples, None, config.run.policy, target, bc))}

    return _run_stage(stage, train, timings)["model"]


def _export_final(config: PipelineConfig, root: Path, model: str, result: dict[str, Any] | None) -> Path:
    """Copy the chosen method's model to OUTPUT/model with a model card (base model, data, method, results)."""
    from drirl.io import atomic_directory
    from drirl.report import model_card

    target = root / "model"
    source = Path(model)
    with atomic_directory(target) as tmp:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        atomic_write_text(tmp / "README.md", model_card(config, result))
    return target
