"""`drirl run`: data → reward models → alignment → evaluation → report, each stage resumable.

:func:`run_pipeline` is a short sequence of named steps: plan every stage (:func:`plan_pipeline`: for each seed the
warm start, the reward models, the GRPO / DPO methods, the evaluations), start the run folder, run the stages, export
the final model, write the report. Every stage writes its own folder under the run folder with a ``stage.json``; what
a stage's output depends on, and when it is skipped or resumed, is defined once in :mod:`drirl.stages` (the same rules
``drirl reward train`` and ``drirl align`` apply on their own): a stage whose recorded hash matches its output settings
and the hashes of the stages it reads is skipped; one that crashed has no ``stage.json`` and runs again; alignment
resumes only checkpoints written with the same settings. The run ends with ``report.md`` and ``report.json``.

Methods (``run.methods``) come from a registry (:data:`BUILTIN_METHODS`): each names the kind of training it is and
the settings it fixes in the stage sections (``align.scaling_mode`` for the α ablations, ``reward.per_category`` for
one reward model instead of one per category...). ``run.custom_methods`` adds named methods that extend another
with section overrides. A key a method fixes that the user's section also sets to another value is an error naming
both, never a silent overwrite. With ``run.seeds`` every trained method is trained and evaluated once per seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl import distributed
from drirl.config import config_from_dict, config_to_dict, help_field, read_yaml
from drirl.errors import COMMAND_LINE, ConfigError
from drirl.io import atomic_write_json, atomic_write_text, remove_temporaries
from drirl.stages import Stage, output_settings, read_json, settings_hash

logger = logging.getLogger(__name__)

# Beside a reward bundle trained from another stage's output: that stage's hash at training time.
BUNDLE_INPUTS_FILE = "bundle_inputs.json"
# Beside an alignment stage's checkpoints: the hash of the settings they were written with.
WARM_STARTS = ("none", "sft")
REWARD_NEGATIVES = ("policy", "policy+warm_start")
SECTIONS = ("run", "reward", "align", "eval", "sft", "dpo", "bon")
# Sections a custom method may override.
METHOD_SECTIONS = ("reward", "align", "sft", "dpo", "bon")
KINDS = ("base", "sft", "dpo", "grpo", "bon")
# The sections whose settings a method of each kind trains with (what a custom method may override). A GRPO method's
# warm start is the run's one SFT model, shared by every method that starts from it.
KIND_SECTIONS = {"base": (), "sft": ("sft",), "dpo": ("dpo", "reward"), "grpo": ("reward", "align"),
                 "bon": ("reward", "bon")}
DEMO_VARIANT = "demo-vs-policy"


@dataclass(frozen=True)
class Method:
    """A named way to produce a model: its kind of training and the section settings it fixes.

    ``kind``: base (the policy as is), sft, dpo, grpo (GRPO / GRPO-S on reward models) or bon (Best-of-N from the SFT
    model). ``fixed``: section -> key -> value. ``reward_source`` (grpo kind): ``bundle`` (the run's own IRL reward
    models) or ``external`` (``run.external_reward_model``, one sequence classifier for every prompt).
    """

    name: str
    kind: str
    description: str
    fixed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reward_source: str | None = None
    extends: str | None = None
    # What custom methods (this one and those it extends) set themselves: these take precedence over the sections.
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def fixed_in(self, section: str) -> dict[str, Any]:
        return dict(self.fixed.get(section, {}))


def _bundle_rl(per_category: bool, **align: Any) -> dict[str, dict[str, Any]]:
    return {"reward": {"per_category": per_category, "variant": DEMO_VARIANT},
            "align": {"external_reward_model": None, **align}}


_PRODUCT = {"scaling_mode": "both", "scaling_combine": "product"}
BUILTIN_METHODS: dict[str, Method] = {m.name: m for m in (
    Method("base", "base", "the policy as is"),
    Method("sft", "sft", "supervised fine-tuning on the demonstrations"),
    Method("dpo", "dpo", "DPO: each demonstration chosen over a policy sample"),
    Method("dpo-s", "dpo", "DPO-S: DPO with each pair's loss weighted by α as in GRPO-S",
           {"dpo": {"scaling_mode": "both"}}),
    Method("grpo", "grpo", "GRPO with one reward model for every category, no scaling",
           _bundle_rl(False, scaling_mode="none"), "bundle"),
    Method("grpo-irl", "grpo", "GRPO with the category IRL reward models, no scaling",
           _bundle_rl(True, scaling_mode="none"), "bundle"),
    Method("dr-irl", "grpo", "GRPO-S with the category IRL reward models, α = α^D · α^M",
           _bundle_rl(True, **_PRODUCT), "bundle"),
    Method("dr-irl-data", "grpo", "ablation: GRPO-S with α^D only", _bundle_rl(True, scaling_mode="data"), "bundle"),
    Method("dr-irl-model", "grpo", "ablation: GRPO-S with α^M only", _bundle_rl(True, scaling_mode="model"),
           "bundle"),
    Method("dr-irl-sum", "grpo", "ablation: GRPO-S with α = w·α^D + (1 − w)·α^M",
           _bundle_rl(True, scaling_mode="both", scaling_combine="sum"), "bundle"),
    Method("dr-irl-single", "grpo", "ablation: GRPO-S with one reward model instead of one per category",
           _bundle_rl(False, **_PRODUCT), "bundle"),
    Method("grpo-external", "grpo", "GRPO on an external reward model (run.external_reward_model), no scaling",
           {"align": {"reward_models": None, "scaling_mode": "none"}}, "external"),
    Method("dr-irl-external", "grpo", "GRPO-S on an external reward model (run.external_reward_model)",
           {"align": {"reward_models": None, **_PRODUCT}}, "external"),
    Method("bon", "bon", "AfD: Best-of-N from the SFT model, scored by an init-sft reward model",
           {"reward": {"per_category": True, "variant": "init-sft"}}),
)}
METHODS = tuple(BUILTIN_METHODS)
GRPO_METHODS = tuple(name for name, m in BUILTIN_METHODS.items() if m.kind == "grpo")
# Reward stages the built-in methods share, by the reward settings they fix (folder names of earlier runs).
_REWARD_STAGE_NAMES = {(True, DEMO_VARIANT): "reward", (False, DEMO_VARIANT): "reward-single",
                       (True, "init-sft"): "reward-init-sft"}


def resolve_methods(custom: Mapping[str, Any]) -> dict[str, Method]:
    """The built-in methods plus ``custom`` ({name: {extends: NAME, SECTION: {key: value}}}), each custom one with
    its parent's fixed settings updated by its own overrides. Raises ValueError naming the bad entry."""
    methods = dict(BUILTIN_METHODS)
    pending = dict(custom or {})
    while pending:
        progressed = False
        for name, spec in list(pending.items()):
            where = f"custom_methods.{name}"
            if name in BUILTIN_METHODS:
                raise ValueError(f"{where}: {name!r} is a built-in method; choose another name")
            if not isinstance(spec, Mapping) or not isinstance(spec.get("extends"), str):
                raise ValueError(f"{where}: expected a mapping with 'extends: METHOD' and section overrides")
            unknown = sorted(set(spec) - {"extends", *METHOD_SECTIONS})
            if unknown:
                raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected extends and sections "
                                 f"{', '.join(METHOD_SECTIONS)}")
            parent = spec["extends"]
            if parent not in methods:
                if parent in pending:
                    continue  # defined later in the mapping: resolve it first
                raise ValueError(f"{where}: extends unknown method {parent!r}")
            base = methods[parent]
            unread = [section for section in METHOD_SECTIONS if spec.get(section)
                      and section not in KIND_SECTIONS[base.kind]]
            if unread:
                raise ValueError(f"{where}: a {base.kind} method does not read the {unread[0]} section; it reads "
                                 f"{', '.join(KIND_SECTIONS[base.kind]) or 'none'}")
            fixed = {section: base.fixed_in(section) for section in METHOD_SECTIONS}
            own = {section: dict(base.overrides.get(section, {})) for section in METHOD_SECTIONS}
            for section in METHOD_SECTIONS:
                overrides = spec.get(section) or {}
                if not isinstance(overrides, Mapping):
                    raise ValueError(f"{where}.{section}: expected a mapping of {section} settings")
                fixed[section].update(overrides)
                own[section].update(overrides)
            methods[name] = Method(name, base.kind, f"{base.description}; overrides: "
                                   + (", ".join(f"{s}.{k}={v!r}" for s in METHOD_SECTIONS
                                                for k, v in (spec.get(s) or {}).items()) or "none"),
                                   {s: v for s, v in fixed.items() if v}, base.reward_source, parent,
                                   {s: v for s, v in own.items() if v})
            del pending[name]
            progressed = True
        if not progressed:
            raise ValueError(f"custom_methods: circular 'extends' among {', '.join(sorted(pending))}")
    return methods


@dataclass
class RunConfig:
    output: str | None = field(default=None, metadata=help_field("Run folder.", required=True))
    policy: str = field(default="smollm2-135m-instruct", metadata=help_field("Policy to align."))
    data: str | None = field(default=None, metadata=help_field("Demonstrations; default: the bundled set."))
    methods: list[str] = field(default_factory=lambda: ["base", "dr-irl"], metadata=help_field(
        f"Methods to train and compare: {', '.join(METHODS)}, or a name of custom_methods. The dr-irl-* methods are "
        "the paper's ablations (α^D only, α^M only, sum instead of product, one reward model); the *-external ones "
        "use run.external_reward_model instead of the IRL models."))
    external_reward_model: str | None = field(default=None, metadata=help_field(
        "The reward model of grpo-external and dr-irl-external: one sequence-classification model (a folder or hub "
        "id) scoring every prompt, the paper's external-reward ablation."))
    custom_methods: dict[str, Any] = field(default_factory=dict, metadata=help_field(
        "More methods: {name: {extends: METHOD, align: {...}, reward: {...}, dpo: {...}}}; each takes the method it "
        "extends and overrides the settings it fixes, e.g. {dr-irl-k4: {extends: dr-irl, align: {scaling_mode: "
        "data}}}. A custom method that changes reward settings trains its own reward models (reward-NAME)."))
    final_method: str = field(default="dr-irl", metadata=help_field(
        "Method whose model is copied to OUTPUT/model with a model card."))
    seed: int = field(default=0, metadata=help_field("Seed shared by every stage (when seeds is empty)."))
    seeds: list[int] = field(default_factory=list, metadata=help_field(
        "Training seeds, e.g. [0, 1, 2]: every trained method (and the reward models and SFT model it needs) is "
        "trained and evaluated once per seed, and the report gives mean ± sd over seeds with intervals that "
        "include the seed variance. The first seed keeps the folder names of a one-seed run (align-dr-irl), the "
        "others go to a seed-N folder inside (align-dr-irl/seed-1). Empty: [seed]."))
    best_of_n_gate: int | None = field(default=None, metadata=help_field(
        "N of a cheap gate before RL: the SFT model's best of N samples, picked by the run's category reward "
        "models, evaluated beside greedy SFT (methods sft-best-of-N and sft; the report compares them). If picking "
        "the best of N by the reward does not raise refusal while keeping borderline compliance, GRPO on that "
        "reward will not either. Off when unset."))
    warm_start: str = field(default="none", metadata=help_field(
        "Where the GRPO methods, DPO and DPO-S start: none (the policy as is) or sft (the `sft` "
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
        known = resolve_methods(self.custom_methods)
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)}, got {self.warm_start!r}")
        if self.reward_negatives not in REWARD_NEGATIVES:
            raise ValueError(f"reward_negatives must be one of {', '.join(REWARD_NEGATIVES)}, "
                             f"got {self.reward_negatives!r}")
        if self.reward_negatives == "policy+warm_start" and self.warm_start != "sft":
            raise ValueError("reward_negatives: policy+warm_start needs warm_start: sft")
        if self.best_of_n_gate is not None and self.best_of_n_gate < 2:
            raise ValueError(f"best_of_n_gate must be at least 2 (or unset), got {self.best_of_n_gate}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")

    @property
    def all_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    @property
    def gate_method(self) -> str | None:
        return f"sft-best-of-{self.best_of_n_gate}" if self.best_of_n_gate else None

    @property
    def registry(self) -> dict[str, Method]:
        methods = resolve_methods(self.custom_methods)
        if self.best_of_n_gate:
            # The gate is Best-of-N from the SFT model under the run's own category reward models.
            fixed = {"reward": {"per_category": True, "variant": DEMO_VARIANT}, "bon": {"n": self.best_of_n_gate}}
            methods[self.gate_method] = Method(
                self.gate_method, "bon", f"the gate before RL: the best of {self.best_of_n_gate} SFT samples by the "
                "run's category reward models", fixed, overrides=fixed)
        return methods

    @property
    def all_methods(self) -> list[str]:
        """run.methods, then what the Best-of-N gate adds (greedy sft, and the gate itself)."""
        names = list(dict.fromkeys(self.methods))
        if self.best_of_n_gate:
            names += [m for m in ("sft", self.gate_method) if m not in names]
        return names


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
    # Validate every section as each method will use it now, so a typo or a contradiction fails in a second rather
    # than after an hour of training.
    registry = pipeline.run.registry
    warm = _grpo_warm(pipeline.run, {registry[m].kind for m in pipeline.run.all_methods})

    def check_reward(method: Method) -> None:
        # As _plan_reward_models will build it: with the warm start as extra policy where the run samples it.
        _reward_config(pipeline, "check", method,
                       extra_negative_policy="check" if _samples_warm_start(pipeline.run, method, warm) else None)

    for name in pipeline.run.all_methods:
        method = registry[name]
        check_fixed_settings(pipeline, method)
        if method.kind == "grpo":
            if method.reward_source == "bundle":
                check_reward(method)
            elif "external_reward_model" in pipeline.sections["align"]:
                raise ConfigError(f"method {name} reads run.external_reward_model (one setting for every method "
                                  "that uses it); move align.external_reward_model there", file=source,
                                  key="align.external_reward_model")
            elif not pipeline.run.external_reward_model:
                raise ConfigError(f"method {name} needs run.external_reward_model (a sequence-classification "
                                  "reward model)", file=source, key="run.external_reward_model")
            _align_config(pipeline, "check", method, "check" if method.reward_source == "bundle" else None)
        elif method.kind == "bon":
            check_reward(method)
        elif method.kind in ("sft", "dpo"):
            _baseline_config(pipeline, method, pipeline.run.seed)
    _eval_config(pipeline, "check")
    from drirl.align.baselines import BestOfNConfig, DPOBaselineConfig, SFTBaselineConfig

    for cls, section in ((SFTBaselineConfig, "sft"), (DPOBaselineConfig, "dpo"), (BestOfNConfig, "bon")):
        section_config(cls, pipeline, section)
    if pipeline.run.final_method not in registry:
        raise ConfigError(f"unknown method {pipeline.run.final_method!r}", file=source, key="run.final_method")
    return pipeline


def _origin(p: PipelineConfig, section: str, key: str) -> str:
    return f"--set {section}.{key}" if key in p.overridden.get(section, ()) else (p.source or "the config")


def check_fixed_settings(p: PipelineConfig, method: Method) -> None:
    """ConfigError when the user's section sets a key that ``method`` fixes to another value.

    A custom method's own overrides are exempt: defining the method is how a user changes those keys on purpose.
    """
    for section, fixed in method.fixed.items():
        user = p.sections.get(section, {})
        own = method.overrides.get(section, {})
        for key, value in fixed.items():
            if key in user and key not in own and user[key] != value:
                raise ConfigError(
                    f"{section}.{key} is set to {user[key]!r} in {_origin(p, section, key)} but method {method.name} "
                    f"fixes it to {value!r}; define a method instead (run.custom_methods: {{my-method: {{extends: "
                    f"{method.name}, {section}: {{{key}: {user[key]!r}}}}}}}) or remove the key")


def section_config(cls: type, p: PipelineConfig, section: str, fixed: dict[str, Any] | None = None,
                   defaults: dict[str, Any] | None = None, method: Method | None = None) -> Any:
    """``cls`` built from one section of the pipeline config; an error names the file and section, or the flag.

    ``fixed`` keys (output, policy... that the pipeline sets itself, and a method's fixed settings) override the
    section's; the section's override ``defaults``. An error in a key a custom method sets names that method.
    """
    values = {**(defaults or {}), **p.sections[section], **(fixed or {})}
    try:
        return config_from_dict(cls, values, source=f"{p.source or 'config'} [{section}]")
    except ConfigError as err:
        if method is not None and err.key in method.overrides.get(section, {}):
            raise ConfigError(err.message, file=f"{p.source or 'config'} [run.custom_methods.{method.name}."
                                                f"{section}]", key=err.key) from None
        if err.key not in p.overridden.get(section, ()):
            raise
        raise ConfigError(err.message, file=f"{COMMAND_LINE} (--set {section}.{err.key})") from None


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _grpo_warm(run: RunConfig, kinds: set[str]) -> bool:
    """Whether the GRPO methods start from the SFT model (run.warm_start: sft and a GRPO method to start)."""
    return run.warm_start == "sft" and "grpo" in kinds


def _samples_warm_start(run: RunConfig, method: Method, warm: bool) -> bool:
    """Whether ``method``'s reward stage also samples the SFT warm start (run.reward_negatives: policy+warm_start);
    init-sft pairs its own samples one to one and never does."""
    return (warm and run.reward_negatives == "policy+warm_start"
            and _reward_fixed(method).get("variant", DEMO_VARIANT) != "init-sft")


def _reward_fixed(method: Method) -> dict[str, Any]:
    # DPO-S reads the category models for α^M; so do the GRPO methods.
    return method.fixed_in("reward") or {"per_category": True, "variant": DEMO_VARIANT}


def _reward_config(p: PipelineConfig, output: str, method: Method, *, seed: int | None = None,
                   extra_negative_policy: str | None = None, sft_policy: str | None = None):
    from drirl.reward.irl import RewardTrainConfig

    fixed = {"output": output, "policy": p.run.policy, "data": p.run.data,
             "seed": p.run.seed if seed is None else seed, **_reward_fixed(method),
             "extra_negative_policy": extra_negative_policy}
    if sft_policy and "sft_policy" in _field_names(RewardTrainConfig):
        fixed["sft_policy"] = sft_policy  # sft-demo / init-sft sample the pipeline's own SFT model
    return section_config(RewardTrainConfig, p, "reward", fixed, method=method)


def _align_config(p: PipelineConfig, output: str, method: Method, reward_models: str | None,
                  start: str | None = None, seed: int | None = None):
    from drirl.align.recipe import AlignConfig

    fixed = {"output": output, "policy": start or p.run.policy, "data": p.run.data,
             "seed": p.run.seed if seed is None else seed, **method.fixed_in("align")}
    if method.reward_source == "bundle":
        fixed["reward_models"] = reward_models
    elif method.reward_source == "external":
        fixed["external_reward_model"] = p.run.external_reward_model
    return section_config(AlignConfig, p, "align", fixed, method=method)


def _baseline_config(p: PipelineConfig, method: Method, seed: int):
    from drirl.align import baselines

    cls = baselines.SFTBaselineConfig if method.kind == "sft" else baselines.DPOBaselineConfig
    fixed = method.fixed_in(method.kind)
    # A key the method needs that the installed config lacks (DPO-S's weights need DPOBaselineConfig's scaling
    # fields); a custom method's own unknown key is reported by config_from_dict, naming that method.
    missing = sorted(set(fixed) - _field_names(cls) - set(method.overrides.get(method.kind, {})))
    if missing:
        raise ConfigError(f"method {method.name} needs {cls.__name__}.{missing[0]}, which this version of drirl "
                          "does not have", file=p.source, key="run.methods")
    return section_config(cls, p, method.kind, fixed, defaults={"seed": seed}, method=method)


def _eval_config(p: PipelineConfig, model: str, output: str | None = None, bundle: str | None = None,
                 seed: int | None = None):
    from drirl.eval.harness import EvalConfig

    fixed = {"model": model, "output": output, "seed": p.run.seed if seed is None else seed}
    if bundle and not p.sections["eval"].get("reward_models"):
        fixed["reward_models"] = bundle  # every method's responses scored by the same reward models
    if p.run.data and not p.sections["eval"].get("eval_data"):
        fixed["eval_data"] = p.run.data  # its test split
    return section_config(EvalConfig, p, "eval", fixed)


# ------------------------------------------------------------------------------------------------ stages
def _run_stage(stage: Stage, work: Any, timings: dict[str, float]) -> dict[str, Any]:
    """Skip the stage when its ``stage.json`` matches (drirl.stages), else run ``work`` and record it."""
    state = stage.state()
    if state == "reuse":
        logger.info("stage %s: complete, skipping", stage.name)
        record = stage.record()
        timings[stage.name] = record.get("seconds", 0.0)
        return record["outputs"]
    logger.info("stage %s: %s", stage.name, state)
    if distributed.is_main():
        stage.forget()
    started = time.time()
    outputs = work()
    timings[stage.name] = time.time() - started
    # Written by rank 0 once every rank finished the stage's work.
    distributed.on_main(stage.complete, outputs, timings[stage.name])
    return outputs


@dataclass
class PlannedStage:
    """One stage of a run: its settings (hashed), the work that produces its outputs, and the config class whose
    defaults ``--plan`` leaves out."""

    stage: Stage
    work: Callable[[], dict[str, Any]]
    config_class: type | None = None


@dataclass
class RunPlan:
    """Every stage of a run in order, and where each method's model, evaluation and training log will be."""

    root: Path
    stages: list[PlannedStage] = field(default_factory=list)
    models: dict[tuple[str, int], str] = field(default_factory=dict)
    evals: dict[tuple[str, int], str] = field(default_factory=dict)
    histories: dict[tuple[str, int], str] = field(default_factory=dict)
    bundles: dict[str, str] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    # (method, seed) -> stage name -> the resolved settings of each stage that produced the method's model.
    records: dict[tuple[str, int], dict[str, dict[str, Any]]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, stage: Stage, work: Callable[[], dict[str, Any]], cls: type | None = None) -> Stage:
        self.stages.append(PlannedStage(stage, work, cls))
        return stage


def seed_suffix(seeds: list[int], seed: int) -> str:
    """The folder suffix of ``seed``'s copy of a stage: "" for the first of ``seeds``, "/seed-N" for the others. The
    first seed keeps the folder names of a one-seed run, so runs made before run.seeds existed are reused."""
    return "" if seed == seeds[0] else f"/seed-{seed}"


def seed_folder(stage_folder: str | Path, seeds: list[int], seed: int) -> Path:
    """Where ``seed``'s copy of a stage lives (RUN/eval-dr-irl, RUN/eval-dr-irl/seed-1); see :func:`seed_suffix`."""
    return Path(f"{stage_folder}{seed_suffix(seeds, seed)}")


def recorded_seeds(run_folder: str | Path) -> list[int]:
    """The seeds a finished run was trained with, from its config.json (run.seeds, else [run.seed]), first seed
    first: what :func:`seed_folder` needs to find each seed's stages."""
    run = json.loads((Path(run_folder) / "config.json").read_text())["run"]
    return list(run.get("seeds") or [run.get("seed", 0)])


def _suffix(config: PipelineConfig, seed: int) -> str:
    return seed_suffix(config.run.all_seeds, seed)


def plan_pipeline(config: PipelineConfig) -> RunPlan:
    """The stages ``run_pipeline`` runs, in order, with their resolved settings; nothing is run or written."""
    if not config.run.output:
        raise ConfigError("missing required field", file=config.source, key="run.output")
    root = Path(config.run.output)
    plan = RunPlan(root)
    registry = config.run.registry
    methods = [registry[name] for name in config.run.all_methods]
    for seed in config.run.all_seeds:
        _plan_seed(config, plan, methods, seed)
    return plan


@dataclass
class _Seed:
    """What the planning steps of one seed share: where its stages go and what earlier steps planned."""

    config: PipelineConfig
    plan: RunPlan
    methods: list[Method]
    seed: int
    sfx: str  # folder suffix: "" for the first seed, "/seed-N" for the others
    first: bool
    warm: bool  # the GRPO methods start from the SFT model
    dpo_warm: bool  # DPO and DPO-S start where the GRPO methods start, so the preference methods share one start
    bundle_users: list[Method]  # the methods that read a reward bundle
    needs_sft_policy: bool  # a reward variant samples an SFT policy (sft-demo, init-sft): the run's SFT model
    sft_model: str | None = None
    reward_of: dict[str, str] = field(default_factory=dict)  # method -> its reward stage

    @property
    def sft_stage(self) -> str:
        return f"align-sft{self.sfx}"

    def record(self, method: Method, *stage_names: str) -> None:
        """The settings of the stages that produced ``method``'s model (config.json, model card, report)."""
        self.plan.records[(method.name, self.seed)] = {
            n: s.stage.settings for s in self.plan.stages for n in stage_names if s.stage.name == n}


def _plan_seed(config: PipelineConfig, plan: RunPlan, methods: list[Method], seed: int) -> None:
    """One seed's stages, in the order they run: warm start, reward models, models, evaluations."""
    kinds = {m.kind for m in methods}
    users = _bundle_users(methods)
    s = _Seed(config, plan, methods, seed, _suffix(config, seed), seed == config.run.all_seeds[0],
              warm=_grpo_warm(config.run, kinds),
              dpo_warm=config.run.warm_start == "sft" and "dpo" in kinds,
              bundle_users=users, needs_sft_policy=_needs_sft_policy(users))
    _plan_warm_start(s)
    _plan_reward_models(s)
    _plan_base_and_sft(s)
    _plan_grpo(s)
    _plan_preference_and_best_of_n(s)
    _plan_evaluations(s)


def _bundle_users(methods: list[Method]) -> list[Method]:
    return [m for m in methods if (m.kind == "grpo" and m.reward_source == "bundle") or m.kind == "bon"
            or (m.kind == "dpo" and _dpo_reads_bundle(m))]


def _needs_sft_policy(bundle_users: list[Method]) -> bool:
    """Whether a reward variant samples an SFT policy (sft-demo, init-sft): the run's own SFT model is passed."""
    from drirl.reward.irl import RewardTrainConfig

    return any(_reward_fixed(m).get("variant") in ("sft-demo", "init-sft") for m in bundle_users
               ) and "sft_policy" in _field_names(RewardTrainConfig)


def _plan_warm_start(s: _Seed) -> None:
    """The SFT model: a method of its own, the warm start of GRPO / DPO, Best-of-N's sampler, or AfD's SFT policy.
    It is trained first: its samples can be negatives of the reward models."""
    kinds = {m.kind for m in s.methods}
    if (any(m.name == "sft" for m in s.methods) or "bon" in kinds or s.warm or s.dpo_warm
            or s.needs_sft_policy):
        s.sft_model = _plan_baseline(s.config, s.plan, BUILTIN_METHODS["sft"], s.seed, s.sfx)


def _plan_reward_models(s: _Seed) -> None:
    """One reward stage per distinct reward setting the methods need: train the bundle, then check it."""
    from drirl.reward.irl import RewardTrainConfig

    config, plan = s.config, s.plan
    for method in s.bundle_users:
        fixed = _reward_fixed(method)
        key = (fixed.get("per_category"), fixed.get("variant"))
        base_name = (_REWARD_STAGE_NAMES[key] if set(fixed) <= {"per_category", "variant"}
                     and key in _REWARD_STAGE_NAMES else f"reward-{method.name}")
        name = base_name + s.sfx
        s.reward_of[method.name] = name
        if name in plan.bundles:
            continue
        variant = fixed.get("variant", DEMO_VARIANT)
        extra = s.sft_model if _samples_warm_start(config.run, method, s.warm) else None
        sft_policy = s.sft_model if s.needs_sft_policy and variant in ("sft-demo", "init-sft") else None
        rc = _reward_config(config, str(plan.root / name / "bundle"), method, seed=s.seed,
                            extra_negative_policy=extra, sft_policy=sft_policy)
        inputs = {s.sft_stage: plan.hashes[s.sft_stage]} if (extra or sft_policy) else {}
        with_inputs = {"inputs": inputs} if inputs else {}
        # The stage trains the bundle and then checks it on held-out pairs: a change of the check's settings reruns
        # the check, not the training (_bundle_matches), and does not touch the stages that read the bundle.
        stage = Stage(plan.root, name, {**config_to_dict(rc), **with_inputs},
                      key={**output_settings(rc), **with_inputs,
                           "check": {"eval_max_prompts_per_category": rc.eval_max_prompts_per_category}})

        def train(rc=rc, inputs=inputs):
            from drirl.plots import plot_heatmap
            from drirl.reward.evaluate import evaluate_bundle
            from drirl.reward.irl import train_reward_models

            bundle = Path(rc.output)
            # A crash after training must not cost a retraining; a retrained input (same path) must.
            if not _bundle_matches(bundle, rc, inputs):
                bundle = train_reward_models(rc, **reward_policy_steps(rc))
                if inputs:
                    distributed.on_main(atomic_write_json, bundle.parent / BUNDLE_INPUTS_FILE, inputs)
            metrics = evaluate_bundle(bundle, data=rc.data,
                                      max_prompts_per_category=rc.eval_max_prompts_per_category)
            distributed.on_main(plot_heatmap, metrics["cross_category"], metrics["categories"],
                                bundle.parent / "heatmap.png")
            distributed.on_main(atomic_write_json, bundle.parent / "reward_eval.json", metrics)
            return {"bundle": str(bundle), "mean_pairwise_accuracy": metrics.get("mean_pairwise_accuracy"),
                    "pairwise_accuracy": metrics.get("pairwise_accuracy")}

        plan.add(stage, train, RewardTrainConfig)
        plan.bundles[name] = rc.output
        # What later stages read is the bundle: the check's settings are not part of its hash.
        plan.hashes[name] = settings_hash(rc, inputs)


def reward_policy_steps(rc: Any) -> dict[str, Any]:
    """The policy steps a reward config needs from the alignment stage (the reward stage does not import them), as
    keyword arguments of :func:`drirl.reward.irl.train_reward_models`: a GRPO step between IRL rounds
    (``rounds`` > 1) and the SFT policy of AfD's variants when no ``sft_policy`` is given. Used by ``drirl run`` and
    ``drirl reward train`` alike."""
    steps: dict[str, Any] = {}
    if rc.rounds > 1 and rc.variant != "init-demo":
        from drirl.align.recipe import align_policy_improver

        steps["improve_policy"] = align_policy_improver(rc)
    if rc.variant in ("sft-demo", "init-sft") and not rc.sft_policy:
        from drirl.align.baselines import afd_sft_trainer

        steps["train_sft_policy"] = afd_sft_trainer(rc)
    return steps


def _plan_base_and_sft(s: _Seed) -> None:
    """The base policy (evaluated once, with the first seed) and the SFT methods."""
    for method in s.methods:
        if method.kind == "base" and s.first:
            from drirl.models import resolve_model

            s.plan.models[(method.name, s.seed)] = str(resolve_model(s.config.run.policy))
            s.record(method)
        elif method.kind == "sft":
            # The built-in sft is the warm start itself; a custom one trains its own model.
            model = (s.sft_model if method.name == "sft"
                     else _plan_baseline(s.config, s.plan, method, s.seed, s.sfx))
            s.plan.models[(method.name, s.seed)] = model
            s.record(method, f"align-{method.name}{s.sfx}")


def _plan_grpo(s: _Seed) -> None:
    """GRPO and GRPO-S: one alignment stage per method, resumable from its checkpoints."""
    from drirl.align.recipe import AlignConfig

    config, plan = s.config, s.plan
    for method in s.methods:
        if method.kind != "grpo":
            continue
        name = f"align-{method.name}{s.sfx}"
        bundle_stage = s.reward_of.get(method.name)
        ac = _align_config(config, str(plan.root / name / "run"), method, plan.bundles.get(bundle_stage),
                           start=s.sft_model if s.warm else None, seed=s.seed)
        inputs = {**({bundle_stage.split("/")[0]: plan.hashes[bundle_stage]} if bundle_stage else {}),
                  **({"align-sft": plan.hashes[s.sft_stage]} if s.warm else {})}
        stage = Stage(plan.root, name, {**config_to_dict(ac), "inputs": inputs},
                      key={**output_settings(ac), "inputs": inputs})
        plan.hashes[name] = stage.hash

        def align(ac=ac, stage=stage):
            from drirl.align.recipe import run_align

            return {"model": str(run_align(ac, resume=True, checkpoint_hash=stage.hash)), "run": ac.output}

        plan.add(stage, align, AlignConfig)
        plan.models[(method.name, s.seed)] = str(Path(ac.output) / "model")
        plan.histories[(method.name, s.seed)] = ac.output
        s.record(method, *([bundle_stage] if bundle_stage else []), *([s.sft_stage] if s.warm else []), name)


def _plan_preference_and_best_of_n(s: _Seed) -> None:
    """DPO / DPO-S (a stage each) and Best-of-N (no training: the SFT model and a bundle, used at evaluation)."""
    for method in s.methods:
        if method.kind == "dpo":
            s.plan.models[(method.name, s.seed)] = _plan_baseline(
                s.config, s.plan, method, s.seed, s.sfx, s.plan.bundles.get(s.reward_of.get(method.name, "")),
                start=s.sft_model if s.dpo_warm else None)
            s.record(method, *([s.reward_of[method.name]] if method.name in s.reward_of else []),
                     *([s.sft_stage] if s.dpo_warm else []), f"align-{method.name}{s.sfx}")
        elif method.kind == "bon":
            s.record(method, s.sft_stage, s.reward_of[method.name])


def _plan_evaluations(s: _Seed) -> None:
    """One evaluation stage per method, every method's responses scored by the same reward models."""
    from drirl.eval.harness import EvalConfig

    config, plan, sfx = s.config, s.plan, s.sfx
    scorer = next((name + sfx for name in ("reward", "reward-single") if name + sfx in plan.bundles), None)
    for method in s.methods:
        if method.kind == "base" and not s.first:
            continue
        model = s.sft_model if method.kind == "bon" else plan.models[(method.name, s.seed)]
        name = f"eval-{method.name}{sfx}"
        ec = _eval_config(config, model, str(plan.root / name), plan.bundles.get(scorer) if scorer else None,
                          seed=s.seed)
        sources = {"base": [], "bon": [s.sft_stage, s.reward_of.get(method.name, "")]}.get(
            method.kind, [f"align-{method.name}{sfx}"])
        sources = sources + ([scorer] if scorer and scorer not in sources else [])
        bon_bundle = plan.bundles.get(s.reward_of.get(method.name, "")) if method.kind == "bon" else None
        extras = {"method": method.name, "bundle": bon_bundle,
                  "inputs": {n.split("/")[0]: plan.hashes[n] for n in sources}}
        stage = Stage(plan.root, name, {**config_to_dict(ec), **extras}, key={**output_settings(ec), **extras})

        def evaluate(ec=ec, method=method, bon_bundle=bon_bundle, seed=s.seed, sft_model=s.sft_model):
            from drirl.eval.harness import evaluate as run_eval

            responder = None
            if method.kind == "bon":
                from drirl.align.baselines import BestOfNConfig, BestOfNResponder

                bon = section_config(BestOfNConfig, config, "bon", method.fixed_in("bon"), defaults={"seed": seed},
                                     method=method)
                responder = BestOfNResponder.from_paths(sft_model, bon_bundle, bon)
            result = run_eval(ec, responder=responder)
            return {"eval": str(Path(ec.output) / "eval.json"), "headline": {
                k: result.to_dict().get(k) for k in ("harmful_refusal", "benign_compliance", "qa_accuracy")}}

        plan.add(stage, evaluate, EvalConfig)
        plan.evals[(method.name, s.seed)] = ec.output
        plan.records.setdefault((method.name, s.seed), {})[name] = stage.settings


def _dpo_reads_bundle(method: Method) -> bool:
    """DPO-S computes α^M from reward gaps: it reads the category models when its config has a field for them."""
    from drirl.align.baselines import DPOBaselineConfig

    return (method.fixed_in("dpo").get("scaling_mode", "none") != "none"
            and "reward_models" in _field_names(DPOBaselineConfig))


def run_pipeline(config: PipelineConfig) -> Path:
    """Run every stage the methods need; returns the run folder (holding report.md and report.json)."""
    plan = plan_pipeline(config)
    _start_run(config, plan)
    timings = _run_stages(plan)
    final = _export_final_model(config, plan)
    _write_run_report(config, plan, timings, final)
    return plan.root


def _start_run(config: PipelineConfig, plan: RunPlan) -> None:
    """One process group for every stage (under torchrun / accelerate launch), the run folder, config.json."""
    distributed.setup()
    plan.root.mkdir(parents=True, exist_ok=True)
    removed = distributed.on_main(remove_temporaries, plan.root)  # leftovers of writes a killed run did not finish
    if removed:
        logger.info("removed %d unfinished temporary file(s) of an interrupted run", removed)
    distributed.on_main(atomic_write_json, plan.root / "config.json", run_record(config, plan))


def _run_stages(plan: RunPlan) -> dict[str, float]:
    timings: dict[str, float] = {}
    for planned in plan.stages:
        plan.outputs[planned.stage.name] = _run_stage(planned.stage, planned.work, timings)
    return timings


def _first_seed_results(config: PipelineConfig, plan: RunPlan) -> dict[str, dict[str, Any]]:
    seed = config.run.all_seeds[0]
    return {m: json.loads((Path(plan.evals[(m, seed)]) / "eval.json").read_text()) for m in config.run.all_methods}


def _export_final_model(config: PipelineConfig, plan: RunPlan) -> Path | None:
    """OUTPUT/model: the final method's model (first seed) with its model card."""
    key = (config.run.final_method, config.run.all_seeds[0])
    if config.run.final_method not in config.run.all_methods or key not in plan.models:
        return None
    result = _first_seed_results(config, plan).get(config.run.final_method)
    return distributed.on_main(_export_final, config, plan.root, plan.models[key], result, plan.records.get(key, {}))


def _write_run_report(config: PipelineConfig, plan: RunPlan, timings: dict[str, float], final: Path | None) -> None:
    from drirl.report import write_report

    seed = config.run.all_seeds[0]
    histories = {m: d for (m, s), d in plan.histories.items() if s == seed}
    bundles = {name: path for name, path in plan.bundles.items() if "/" not in name}
    distributed.on_main(write_report, plan.root, config, _first_seed_results(config, plan), histories, timings,
                        bundles, final, runs=_runs(config, plan))


def _runs(config: PipelineConfig, plan: RunPlan) -> dict[str, Any]:
    """What the report needs beyond the first seed: eval folders per method and seed, the comparisons to make, and
    each method's resolved settings."""
    registry = config.run.registry
    methods = config.run.all_methods
    classes = {p.stage.name: p.config_class for p in plan.stages}
    return {"seeds": config.run.all_seeds,
            "evals": {m: {s: d for (mm, s), d in plan.evals.items() if mm == m} for m in methods},
            "pairs": comparison_pairs(methods, registry, config.run.warm_start == "sft"),
            # Training stages only: every method's evaluation settings are the eval section's (config.json has them).
            "settings": {m: {name: compact_settings(values, classes.get(name)) for name, values in
                             plan.records.get((m, config.run.all_seeds[0]), {}).items()
                             if not name.startswith("eval-")} for m in methods}}


def comparison_pairs(methods: list[str], registry: Mapping[str, Method], warm: bool) -> list[tuple[str, str]]:
    """(A, B) pairs the report compares on shared prompts: every method against base, every GRPO method against its
    start (sft with a warm start), the ordered GRPO methods (grpo-irl − grpo, dr-irl − grpo, dr-irl − grpo-irl),
    DPO-S against DPO, and every ablation or custom method against the method it extends or varies."""
    pairs: list[tuple[str, str]] = []
    present = set(methods)

    def add(a: str, b: str) -> None:
        if a in present and b in present and a != b and (a, b) not in pairs:
            pairs.append((a, b))

    for m in methods:
        add(m, "base")
    for m in methods:
        if registry[m].kind == "grpo" and warm:
            add(m, "sft")
    for a, b in (("grpo-irl", "grpo"), ("dr-irl", "grpo"), ("dr-irl", "grpo-irl"), ("dpo-s", "dpo")):
        add(a, b)
    for m in methods:
        if m.startswith("sft-best-of-"):
            add(m, "sft")
    for m in methods:
        method = registry[m]
        if method.extends:
            add(m, method.extends)
        elif m.startswith("dr-irl-"):
            add(m, "dr-irl")
        elif m == "dr-irl-external":
            add(m, "grpo-external")
    return pairs


def _defaults(cls: type | None) -> dict[str, Any]:
    if cls is None:
        return {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def compact_settings(settings: Mapping[str, Any], cls: type | None) -> dict[str, Any]:
    """The settings that differ from ``cls``'s defaults (every key when ``cls`` is None), without the output path."""
    defaults = _defaults(cls)
    return {k: v for k, v in settings.items()
            if k not in ("output",) and (k not in defaults or json.dumps(defaults[k], default=str)
                                         != json.dumps(v, default=str))}


def run_record(config: PipelineConfig, plan: RunPlan) -> dict[str, Any]:
    """config.json: what the user asked for (``requested``), and per method and seed the resolved settings of every
    stage that produced its model and its evaluation (``methods``) — the settings that actually ran."""
    registry = config.run.registry
    methods = config.run.all_methods
    return {"run": config_to_dict(config.run), "requested": config.sections,
            "methods": {m: {"kind": registry[m].kind, "extends": registry[m].extends,
                            "fixed": {s: dict(v) for s, v in registry[m].fixed.items()},
                            "seeds": {str(s): plan.records.get((m, s), {}) for s in config.run.all_seeds
                                      if (m, s) in plan.records}} for m in methods}}


def format_plan(config: PipelineConfig, plan: RunPlan) -> str:
    """``drirl run --plan``: each stage, whether it will be reused, and its settings that differ from the defaults."""
    lines = [f"run folder {plan.root}; methods {', '.join(config.run.all_methods)}; "
             f"seeds {', '.join(map(str, config.run.all_seeds))}"]
    for planned in plan.stages:
        stage = planned.stage
        lines.append(f"{stage.name}: {stage.state()}")
        for key, value in compact_settings(stage.settings, planned.config_class).items():
            lines.append(f"    {key}: {json.dumps(value, default=str)}")
    return "\n".join(lines) + "\n"


def _bundle_matches(bundle: Path, config: Any, inputs: dict[str, str] | None = None) -> bool:
    """Whether the bundle on disk was trained with the output settings of ``config`` (drirl.stages) and, when given,
    from the stages hashed in ``inputs``."""
    manifest = read_json(bundle / "manifest.json")
    if not isinstance(manifest, dict):
        return False
    if inputs and read_json(bundle.parent / BUNDLE_INPUTS_FILE) != inputs:
        return False
    return output_settings(manifest.get("config") or {}, type(config)) == output_settings(config)


def _plan_baseline(config: PipelineConfig, plan: RunPlan, method: Method, seed: int, sfx: str,
                   bundle: str | None = None, start: str | None = None) -> str:
    """Plan an SFT or DPO stage (once per seed); returns the model folder it will write. ``start``: the model to
    train from (default: the run's policy)."""
    from drirl.align import baselines

    name = f"align-{method.name}{sfx}"
    target = plan.root / name / "model"
    if any(p.stage.name == name for p in plan.stages):
        return str(target)
    bc = _baseline_config(config, method, seed)
    if bundle and "reward_models" in _field_names(type(bc)):
        bc = dataclasses.replace(bc, reward_models=bundle)
    start = start or config.run.policy
    inputs = {"inputs": {"align-sft": plan.hashes[f"align-sft{sfx}"]}} if start != config.run.policy else {}
    extras = {"policy": start, "data": config.run.data, **inputs}
    stage = Stage(plan.root, name, {**config_to_dict(bc), **extras}, key={**output_settings(bc), **extras})
    plan.hashes[name] = stage.hash

    def train():
        from drirl.data.schema import load_split

        examples = load_split(config.run.data, "train", with_demonstration=True)
        if method.kind == "sft":
            return {"model": str(baselines.train_sft(examples, start, target, bc))}
        return {"model": str(baselines.train_dpo(examples, None, start, target, bc))}

    plan.add(stage, train, type(bc))
    return str(target)


def _export_final(config: PipelineConfig, root: Path, model: str, result: dict[str, Any] | None,
                  records: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Copy the chosen method's model to OUTPUT/model with a model card (base model, data, method, results)."""
    from drirl.io import atomic_directory
    from drirl.report import model_card

    target = root / "model"
    source = Path(model)
    with atomic_directory(target) as tmp:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        atomic_write_text(tmp / "README.md", model_card(config, result, records))
    return target
