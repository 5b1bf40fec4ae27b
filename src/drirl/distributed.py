"""Ranks for `drirl run` under several processes (``torchrun``, ``accelerate launch``), and no-ops in one.

Every helper works without any accelerate state: the rank and process count come from ``torch.distributed`` once it
is initialised, else from the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else rank 0 of 1.
The first collective call (or :func:`setup`) initialises ``torch.distributed`` itself: gloo on CPU, NCCL on GPUs
(each process on the GPU of its ``LOCAL_RANK``); the TRL trainers' accelerate state later reuses that process group.
Python objects always travel through a gloo group, so gathering answers never touches GPU memory.

The pipeline's rules, built from these helpers:

* files (``stage.json``, manifests, models, reports) are written by rank 0 only, after a barrier, through
  :func:`on_main`, which also hands rank 0's return value (or its failure) to every rank;
* generation is sharded by :func:`generate_sharded`: whole generation batches go round-robin to the ranks, each rank
  generates its batches, and every rank ends with every answer in the original order. A batch holds exactly the
  prompts and the sampling seed it holds in a one-process run, so N processes give the answers of one.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A rank waits this long at a barrier while rank 0 writes a model or a report (gloo's default is 30 minutes, too
# short for saving a 7-8B model on a slow disk). Override with DRIRL_DIST_TIMEOUT_MINUTES.
DEFAULT_TIMEOUT_MINUTES = 120

_object_group: Any = None  # the gloo group for Python objects; the default group itself when that is gloo


def _torch_dist() -> Any:
    """torch.distributed when it is initialised, else None (torch not imported for a one-process run)."""
    import sys

    if "torch" not in sys.modules and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """Number of processes of this run: torch.distributed's when initialised, else ``WORLD_SIZE``, else 1."""
    dist = _torch_dist()
    return dist.get_world_size() if dist is not None else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's index in [0, world_size()): torch.distributed's when initialised, else ``RANK``, else 0."""
    dist = _torch_dist()
    return dist.get_rank() if dist is not None else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; its GPU), else 0."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this is rank 0, the process that writes every file."""
    return rank() == 0


def _timeout() -> datetime.timedelta:
    return datetime.timedelta(minutes=float(os.environ.get("DRIRL_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES)))


def setup() -> None:
    """Initialise torch.distributed for a multi-process launch; nothing in a one-process run. Idempotent.

    On a machine without CUDA it also sets ``ACCELERATE_USE_CPU=true``, without which accelerate treats a
    ``torchrun`` worker as a lone process and the TRL trainers would not split their batches. Ranks other than 0 log
    warnings only, so the log is not repeated N times.
    """
    global _object_group
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and _torch_dist() is None:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank() % torch.cuda.device_count())
            backend = "nccl"
        else:
            os.environ.setdefault("ACCELERATE_USE_CPU", "true")
            backend = "gloo"
        dist.init_process_group(backend=backend, timeout=_timeout())
        # Tear the group down before the interpreter does: gloo's threads still running at exit abort the process
        # ("terminate called without an active exception"), which turned a finished run into exit code -6.
        atexit.register(teardown)
        if rank() != 0:
            logging.getLogger("drirl").setLevel(max(logging.WARNING, logging.getLogger("drirl").level))
        logger.info("torch.distributed initialised: %d processes, backend %s", world_size(), backend)
    if _object_group is None:
        # new_group is collective: every rank reaches this line once, at the same point of the program.
        _object_group = (dist.group.WORLD if dist.get_backend() == "gloo"
                         else dist.new_group(backend="gloo", timeout=_timeout()))


def teardown() -> None:
    """Destroy the process group this module initialised (a local call: no other rank needs to take part)."""
    global _object_group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _object_group = None


def _group() -> Any:
    setup()
    return _object_group


def barrier() -> None:
    """Wait until every process gets here; nothing in a one-process run."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier(group=_group())


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache to fill), then the other ranks run it, finding its result."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def shard_indices(count: int, *, strided: bool = False) -> list[int]:
    """Positions of ``count`` items that this rank handles.

    Contiguous (default): rank r takes one block, the first ``count % N`` ranks one item more than the others
    (10 items on 3 ranks: 0-3, 4-6, 7-9). Strided: rank r takes r, r+N, r+2N... (0,3,6,9 / 1,4,7 / 2,5,8), which
    balances the work when the items are sorted by cost.
    """
    size, index = world_size(), rank()
    if strided:
        return list(range(index, count, size))
    base, extra = divmod(count, size)
    start = index * base + min(index, extra)
    return list(range(start, start + base + (1 if index < extra else 0)))


def shard(items: Sequence[T], *, strided: bool = False) -> list[T]:
    """This rank's share of ``items`` (see :func:`shard_indices`); all of them in a one-process run."""
    return [items[i] for i in shard_indices(len(items), strided=strided)]


def all_gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (a picklable object)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value, group=_group())
    return gathered


def gather_objects(local: Sequence[T], *, strided: bool = False) -> list[T]:
    """The inverse of :func:`shard`: each rank passes the results for its shard (same ``strided``), every rank gets
    the results for all items in the original order."""
    parts = all_gather(list(local))
    if world_size() == 1:
        return list(local)
    count = sum(len(part) for part in parts)
    full: list[Any] = [None] * count
    for index, part in enumerate(parts):
        if strided:
            positions = list(range(index, count, len(parts)))
        else:
            base, extra = divmod(count, len(parts))
            start = index * base + min(index, extra)
            positions = list(range(start, start + base + (1 if index < extra else 0)))
        if len(positions) != len(part):
            raise RuntimeError(f"rank {index} returned {len(part)} results for a shard of {len(positions)} items")
        for position, item in zip(positions, part, strict=True):
            full[position] = item
    return full


class MainProcessError(RuntimeError):
    """Raised on the other ranks when rank 0 failed inside :func:`on_main`."""


def on_main(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function`` on rank 0 only, once every rank got here; every rank returns rank 0's result.

    This is how every file of a run is written once. The barrier before it means rank 0 never marks work complete
    that another rank is still doing; the result's broadcast after it means no rank reads the file before it exists.
    When ``function`` raises on rank 0, the other ranks raise :class:`MainProcessError` instead of waiting forever.
    """
    if world_size() == 1:
        return function(*args, **kwargs)
    barrier()
    payload: list[Any] = [None]
    failure: BaseException | None = None
    if is_main():
        try:
            payload[0] = ("ok", function(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - re-raised below, after telling the other ranks
            failure = err
            payload[0] = ("error", f"{type(err).__name__}: {err}")
    import torch.distributed as dist

    dist.broadcast_object_list(payload, src=0, group=_group())
    if failure is not None:
        raise failure
    status, value = payload[0]
    if status != "ok":
        raise MainProcessError(f"rank 0 failed: {value}")
    return value


# ------------------------------------------------------------------------------------------------- generation
def generation_batches(tokenizer: Any, prompts: Sequence[Any], batch_size: int,
                       system_prompt: str | None = None) -> list[list[int]]:
    """The batches (lists of prompt positions) :func:`drirl.generation.generate` forms: prompts sorted by the length
    of their chat-formatted text (stable), cut every ``batch_size``."""
    from drirl.generation import render_prompt

    lengths = [len(render_prompt(tokenizer, p, system_prompt)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def generate_sharded(model: Any, tokenizer: Any, prompts: Sequence[Any], settings: Any = None, *,
                     system_prompt: str | None = None, progress: bool = True, description: str = "generating",
                     bf16: bool | str = "auto", stats: dict[str, Any] | None = None) -> list[list[str]]:
    """:func:`drirl.generation.generate` with its batches shared out across the ranks; every rank returns all
    answers, in prompt order. A collective call: every rank must make it, with the same prompts.

    Batch k (of the length-sorted prompts, as ``generate`` forms them) goes to rank ``k % N`` (strided, so every
    rank gets short and long prompts) and is generated as one ``generate`` call with the seed ``generate`` gives it
    in a one-process run (``seed + position of its first prompt in the sorted order``). The same prompts are padded
    together and sampled with the same seed, so the answers do not depend on the number of processes. ``stats``
    (truncated prompts, prompt count) add up over all ranks.
    """
    from drirl.generation import GenerationSettings, generate

    settings = settings or GenerationSettings()
    if world_size() == 1:
        return generate(model, tokenizer, prompts, settings, system_prompt=system_prompt, progress=progress,
                        description=description, bf16=bf16, stats=stats)
    batches = generation_batches(tokenizer, prompts, settings.batch_size, system_prompt)
    mine = [(k, batch) for k, batch in enumerate(batches) if k % world_size() == rank()]
    local_stats: dict[str, Any] = {}
    answers: list[tuple[int, list[str]]] = []
    for k, batch in mine:
        # The batch's seed in a one-process run: generate() seeds each batch with seed + its start in the order.
        batch_settings = dataclasses.replace(settings, seed=settings.seed + k * settings.batch_size,
                                             batch_size=len(batch))
        outputs = generate(model, tokenizer, [prompts[i] for i in batch], batch_settings,
                           system_prompt=system_prompt, progress=False, description=description, bf16=bf16,
                           stats=local_stats)
        answers.extend(zip(batch, outputs, strict=True))
    if progress:
        logger.info("%s: rank %d generated %d of %d batches", description, rank(), len(mine), len(batches))
    results: list[list[str]] = [[] for _ in prompts]
    for part, part_stats in all_gather((answers, local_stats)):
        for index, output in part:
            results[index] = output
        if stats is not None:
            for key in ("truncated_prompts", "prompts"):
                stats[key] = stats.get(key, 0) + part_stats.get(key, 0)
            if "context_limit" in part_stats:
                stats["context_limit"] = part_stats["context_limit"]
    return results
