"""α is computed on the gathered groups: each of 2 processes ends with its slice of the 1-process advantages.

tests/distributed_alpha.py runs one GRPO-S batch of 4 groups (2 per process; categories crime, insult | crime,
fraud), so the crime category's running means cross processes. The same batch split into two one-process runs, what
computing α per process would give, must come out different: otherwise the comparison could not catch that fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("distributed_alpha.py")


def _run(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def _read(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / f"{name}.json").read_text())


@pytest.mark.slow
def test_each_process_ends_with_its_slice_of_the_single_process_advantages(tiny_lm_path, tmp_path):
    _run([sys.executable, str(SCRIPT), str(tiny_lm_path), str(tmp_path)], tmp_path)
    # accelerate starts several CPU processes only through MPI; torchrun is the MPI-free equivalent and gives
    # accelerate the same process group (ACCELERATE_USE_CPU=true).
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
          str(SCRIPT), str(tiny_lm_path), str(tmp_path)], tmp_path)
    for part in (0, 1):
        _run([sys.executable, str(SCRIPT), str(tiny_lm_path), str(tmp_path), "--slice", f"{part}/2"], tmp_path)
    single = _read(tmp_path, "world1-rank0")
    ranks = [_read(tmp_path, f"world2-rank{r}") for r in (0, 1)]
    alone = [_read(tmp_path, f"slice{r}") for r in (0, 1)]

    assert len(single["advantages"]) == 16 and len(single["alpha"]) == 16
    assert len(set(round(a, 4) for a in single["alpha"])) > 2  # α really varies within the batch
    for index, rank in enumerate(ranks):
        mine = slice(8 * index, 8 * (index + 1))
        assert rank["advantages"] == pytest.approx(single["advantages"][mine], abs=1e-5)
        assert rank["alpha"] == pytest.approx(single["alpha"], abs=1e-5)  # every process holds the whole batch's α
        _assert_state_equal(rank["scaling_state"], single["scaling_state"])

    # α per process: the second crime group reads a running mean that lacks the first one, so process 1's
    # advantages differ from its slice of the single-process ones by far more than the tolerance above.
    per_process = alone[0]["advantages"] + alone[1]["advantages"]
    worst = max(abs(a - b) for a, b in zip(per_process, single["advantages"], strict=True))
    assert worst > 1e-3
    assert alone[1]["advantages"] != pytest.approx(single["advantages"][8:], abs=1e-5)


def _assert_state_equal(actual: dict, expected: dict) -> None:
    """The categories' running means of δ̄ and ḡ_ref, with their update counts, equal on every process."""
    for name in ("delta_running", "gap_running"):
        assert actual[name]["counts"] == expected[name]["counts"]
        assert actual[name]["means"] == pytest.approx(expected[name]["means"], abs=1e-5)
