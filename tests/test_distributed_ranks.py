"""drirl.distributed: ranks from the environment, sharding, gathering, rank-0 writes and sharded generation.

The two-process checks run this file as a script under torchrun (gloo on CPU); the script writes what each rank saw
to a JSON file per rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drirl import distributed

HERE = Path(__file__).resolve()


@pytest.fixture
def no_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_one_process_without_any_launcher(no_launcher):
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main()
    items = list("abcde")
    assert distributed.shard(items) == items and distributed.shard(items, strided=True) == items
    assert distributed.gather_objects(["x", "y"]) == ["x", "y"]
    assert distributed.all_gather({"a": 1}) == [{"a": 1}]
    assert distributed.on_main(lambda a, b: a + b, 2, b=3) == 5
    distributed.barrier()
    order = []
    with distributed.main_first():
        order.append("body")
    assert order == ["body"]


def test_rank_and_shards_come_from_the_launcher_environment(monkeypatch):
    # torchrun / accelerate launch set these before torch.distributed is initialised.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert (distributed.rank(), distributed.world_size(), distributed.local_rank()) == (1, 3, 1)
    assert not distributed.is_main()
    # 10 items on 3 ranks: contiguous blocks 0-3, 4-6, 7-9; strided 0,3,6,9 / 1,4,7 / 2,5,8.
    assert distributed.shard_indices(10) == [4, 5, 6]
    assert distributed.shard_indices(10, strided=True) == [1, 4, 7]
    monkeypatch.setenv("RANK", "0")
    assert distributed.shard_indices(10) == [0, 1, 2, 3]
    assert distributed.shard(list(range(10)), strided=True) == [0, 3, 6, 9]
    monkeypatch.setenv("RANK", "2")
    assert distributed.shard_indices(2) == []  # fewer items than ranks: the last rank has none


def test_generation_batches_follow_generate(tiny_policy_objects):
    _, tokenizer = tiny_policy_objects
    prompts = ["a much longer prompt than the others here", "hi", "medium prompt", "x", "another one"]
    batches = distributed.generation_batches(tokenizer, prompts, 2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert batches[-1] == [0]  # the longest prompt comes last, as generate() sorts by length


@pytest.fixture(scope="module")
def tiny_policy_objects(tiny_lm_path):
    from drirl.models import load_policy

    return load_policy(str(tiny_lm_path))


PROMPTS = [f"question number {i} " + "word " * (i % 4) for i in range(7)]


def _script(model_path: str, out_dir: str) -> None:
    """What each rank records: its shard, the gathered lists, on_main's result and failure, sampled answers."""
    from drirl.generation import GenerationSettings
    from drirl.models import load_policy

    distributed.setup()
    me = distributed.rank()
    record: dict = {"rank": me, "world": distributed.world_size(),
                    "contiguous": distributed.shard(list(range(7))),
                    "strided": distributed.shard(list(range(7)), strided=True)}
    record["gathered"] = distributed.gather_objects([x * 10 for x in record["contiguous"]])
    record["gathered_strided"] = distributed.gather_objects([x * 10 for x in record["strided"]], strided=True)
    calls = Path(out_dir) / "on_main_calls.txt"

    def write_once() -> str:
        with open(calls, "a") as handle:
            handle.write(f"{me}\n")
        return f"written by {me}"

    record["on_main"] = distributed.on_main(write_once)
    try:
        distributed.on_main(lambda: 1 / 0)
        record["failure"] = None
    except distributed.MainProcessError as err:
        record["failure"] = f"MainProcessError: {err}"
    except ZeroDivisionError:
        record["failure"] = "ZeroDivisionError"
    with distributed.main_first():
        marker = Path(out_dir) / "first.txt"
        record["saw_main_first"] = marker.is_file()
        if distributed.is_main():
            marker.write_text("rank 0 was here")
    model, tokenizer = load_policy(model_path)
    settings = GenerationSettings(max_new_tokens=5, do_sample=True, temperature=1.0, num_return_sequences=2,
                                  batch_size=2, seed=11)
    stats: dict = {}
    record["sampled"] = distributed.generate_sharded(model, tokenizer, PROMPTS, settings, progress=False,
                                                     bf16=False, stats=stats)
    record["stats_prompts"] = stats["prompts"]
    (Path(out_dir) / f"rank{me}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_two_processes_shard_gather_write_once_and_sample_alike(tiny_lm_path, tiny_policy_objects, tmp_path,
                                                                no_launcher):
    from drirl.generation import GenerationSettings, generate

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path])}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29547", str(HERE), str(tiny_lm_path), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["contiguous"] for r in ranks] == [[0, 1, 2, 3], [4, 5, 6]]
    assert [r["strided"] for r in ranks] == [[0, 2, 4, 6], [1, 3, 5]]
    for record in ranks:
        assert record["gathered"] == [0, 10, 20, 30, 40, 50, 60]
        assert record["gathered_strided"] == [0, 10, 20, 30, 40, 50, 60]
        assert record["on_main"] == "written by 0"  # rank 0's result, handed to every rank
        assert record["stats_prompts"] == 7
    assert (tmp_path / "on_main_calls.txt").read_text() == "0\n"  # ran once, on rank 0
    assert ranks[0]["failure"] == "ZeroDivisionError"
    assert ranks[1]["failure"].startswith("MainProcessError: rank 0 failed: ZeroDivisionError")
    assert [r["saw_main_first"] for r in ranks] == [False, True]
    # Sampled answers: every rank holds all of them, equal to one process sampling the whole list.
    model, tokenizer = tiny_policy_objects
    settings = GenerationSettings(max_new_tokens=5, do_sample=True, temperature=1.0, num_return_sequences=2,
                                  batch_size=2, seed=11)
    single = generate(model, tokenizer, PROMPTS, settings, progress=False, bf16=False)
    assert ranks[0]["sampled"] == ranks[1]["sampled"] == single
    assert len({tuple(answers) for answers in single}) > 1  # sampling really differs between prompts


if __name__ == "__main__":
    _script(sys.argv[1], sys.argv[2])
