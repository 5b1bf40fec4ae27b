"""What each stage's output depends on, and when a stage's earlier work is reused or resumed: one definition, used by
``drirl run`` and by each stage's own command alike.

* **Settings that change the output.** A stage's config class lists in ``RUN_ONLY_FIELDS`` the fields that change how
  it runs but not what it produces (its output folder, logging, a batch size used only for sampling speed);
  :func:`output_settings` is the config without them, and :func:`settings_hash` its hash. Changing ``logging_steps``
  therefore retrains nothing, under ``drirl run`` and under ``drirl reward train`` / ``drirl align`` alike. Unset
  (``None``) fields are left out too, so a field added in a later version does not change an older run's hashes.
* **Skip a finished stage** (:class:`Stage`): a folder whose ``stage.json`` holds the hash of the same output
  settings and the same inputs (the hashes of the stages it reads).
* **Resume a trainer** (:func:`prepare_checkpoints`, :func:`last_complete_checkpoint`): checkpoints are resumed only
  when written with the same settings hash (a file beside them); others are removed, with a warning saying why.
* **Resume a partial folder** (:func:`prepare_work_dir`): a ``*.partial`` folder of finished pieces (the reward
  models of a bundle) is reused only by a run with the same settings and data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drirl.config import config_to_dict
from drirl.io import atomic_write_json, sha256_json

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
# Beside a trainer's checkpoints: the hash of the settings they were written with.
CHECKPOINT_HASH_FILE = "checkpoints_hash.json"
# Inside a partial folder: the settings and data it was started with.
WORK_STAMP_FILE = "run.json"


def run_only_fields(cls: type | None) -> tuple[str, ...]:
    """The fields of config class ``cls`` that do not change the stage's output (``cls.RUN_ONLY_FIELDS``)."""
    return tuple(getattr(cls, "RUN_ONLY_FIELDS", ())) if cls is not None else ()


def output_settings(config: Any, cls: type | None = None) -> dict[str, Any]:
    """The settings of ``config`` that change its stage's output: every field but the run-only and unset ones.

    ``config`` is a config dataclass, or a dict of its fields (a manifest's record) with its class as ``cls``.
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        cls, values = type(config), config_to_dict(config)
    else:
        values = dict(config)
    skip = run_only_fields(cls)
    return {k: v for k, v in values.items() if k not in skip and v is not None}


def settings_hash(config: Any, inputs: Mapping[str, str] | None = None, cls: type | None = None) -> str:
    """The 16-hex-digit hash of :func:`output_settings` (and of the hashes of the stages read, ``inputs``)."""
    key = output_settings(config, cls)
    if inputs:
        key["inputs"] = dict(inputs)
    return sha256_json(key)[:16]


def read_json(path: Path) -> Any:
    """The file's JSON value; None when it is missing or not JSON (a write a killed run did not finish)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Stage:
    """A stage's folder, with a ``stage.json`` once complete; ``done`` when its recorded hash matches ``hash``.

    ``settings`` (every resolved setting, recorded as is in ``stage.json``) and ``key`` (what the output depends
    on: the output settings and the hashes of the stages read; by default ``settings``) are given by the planner.
    """

    def __init__(self, root: Path, name: str, settings: dict[str, Any], key: Mapping[str, Any] | None = None):
        self.name, self.folder = name, root / name
        self.settings = settings
        self.hash = sha256_json(dict(key) if key is not None else settings)[:16]

    def recorded_hash(self) -> str | None:
        record = read_json(self.folder / STAGE_FILE)
        return record.get("config_hash") if isinstance(record, dict) else None

    @property
    def done(self) -> bool:
        return self.recorded_hash() == self.hash

    def state(self) -> str:
        """'reuse', 'run (new)', 'run (settings changed: OLD -> NEW)' or 'run (unfinished)'."""
        recorded = self.recorded_hash()
        if recorded == self.hash:
            return "reuse"
        if recorded:
            return f"run (settings changed: {recorded} -> {self.hash})"
        return "run (unfinished)" if self.folder.is_dir() and any(self.folder.iterdir()) else "run (new)"

    def record(self) -> dict[str, Any]:
        return json.loads((self.folder / STAGE_FILE).read_text())

    def forget(self) -> None:
        """Drop the record before the work starts: once the work begins the folder no longer holds what its old
        ``stage.json`` describes, so a crash part-way and a rerun with the old settings cannot take new outputs for
        old ones."""
        (self.folder / STAGE_FILE).unlink(missing_ok=True)
        if self.folder.exists() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def complete(self, outputs: dict[str, Any], seconds: float) -> None:
        atomic_write_json(self.folder / STAGE_FILE, {
            "stage": self.name, "config_hash": self.hash, "settings": self.settings, "outputs": outputs,
            "seconds": round(seconds, 1)})


def prepare_checkpoints(run_dir: Path, settings_hash: str) -> str | None:
    """Make ``run_dir/checkpoints`` safe to resume: keep them only when written with ``settings_hash``.

    Checkpoints without a hash file, or with another one, came from other settings (a changed learning rate, an
    earlier run's leftovers): they are removed so training starts fresh. The hash is written before training starts,
    so a checkpoint of an interrupted run is found again by the rerun with the same settings. Returns why the old
    checkpoints were removed, or None.
    """
    checkpoints = run_dir / "checkpoints"
    marker = run_dir / CHECKPOINT_HASH_FILE
    record = read_json(marker) if marker.is_file() else None
    recorded = record.get("config_hash") if isinstance(record, dict) else None
    reason = None
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and recorded != settings_hash:
        reason = (f"checkpoints in {checkpoints} were written with other settings (hash {recorded or 'unknown'}, "
                  f"now {settings_hash}): removed, training starts fresh")
        logger.warning("%s", reason)
        shutil.rmtree(checkpoints)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"config_hash": settings_hash})
    return reason


def last_complete_checkpoint(folder: Path, complete_marker: str) -> str | None:
    """The newest checkpoint holding ``complete_marker`` (the file its trainer writes last) and trainer_state.json;
    incomplete ones (a kill while saving) are removed."""
    if not folder.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    for _, path in reversed(found):
        if (path / complete_marker).is_file() and (path / "trainer_state.json").is_file():
            return str(path)
        logger.warning("removing incomplete checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def prepare_work_dir(work: Path, wanted: Mapping[str, Any]) -> bool:
    """Make the partial folder ``work`` safe to resume: kept only when its stamp equals ``wanted`` (the output
    settings and a data fingerprint), otherwise emptied with a warning. Returns whether earlier work was kept."""
    stamp = work / WORK_STAMP_FILE
    wanted = dict(wanted)
    if work.is_dir() and stamp.is_file():
        if read_json(stamp) == wanted:
            logger.info("resuming the interrupted run in %s", work)
            return True
        logger.warning("%s holds an interrupted run with other settings or data: starting over", work)
        shutil.rmtree(work)
    elif work.is_dir() and any(work.iterdir()):
        logger.warning("%s exists without a run stamp: starting over", work)
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, wanted)
    return False
