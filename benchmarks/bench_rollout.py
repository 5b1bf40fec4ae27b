"""Benchmark: new tokens per second of each generation backend for a policy's GRPO rollouts.

Every backend samples the same chat-formatted prompts (harmful and benign, alternating, from the bundled train
split) with --generations completions each and at most --max-new-tokens new tokens, like one GRPO generation batch
(temperature 1, top_p 1, top_k 0; --greedy for greedy decoding). Backends:

  dynamic         transformers `generate` with its default dynamic KV cache (the reference, speed-up 1.00)
  static          `generate(cache_implementation="static")`: a preallocated KV cache of fixed shape
  static+compile  static cache, decoding step compiled by torch.compile (--compile; a failure is reported, not fatal)
  drirl           drirl.generation.generate, the project's batched generator (length-sorted batches; an fp32 model
                  on a CPU with native bf16 generates under bf16 autocast)
  vllm            vllm.LLM.generate, when `import vllm` works (engine start-up not timed)

"new tokens" counts only generated tokens up to and including each sequence's first EOS; "padded tokens" counts
every position of the generated block (rows × steps), i.e. the work a batch does while its longest sequence is
still running. Each backend runs once untimed (warm-up, compilation); then --repeats rounds run the backends in
turn (A B C A B C ...), each run with the same seed, so that drift in machine load hits all alike; the fastest run
of each backend counts. The speed-up column compares new tokens/s.

usage:
  python benchmarks/bench_rollout.py --tiny --threads 1                  # a tiny random model, seconds
  python benchmarks/bench_rollout.py --threads 1                         # SmolLM2-135M, demo shape 2 x 4 x 64
  python benchmarks/bench_rollout.py --shape gpu --compile               # 8 prompts x 8 generations x 128 tokens
  python benchmarks/bench_rollout.py --backends dynamic,static --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("dynamic", "static", "static+compile", "drirl", "vllm")
SHAPES = {"demo": (2, 4, 64), "gpu": (8, 8, 128)}  # prompts, generations, max new tokens


@dataclass
class Row:
    backend: str
    batch: str
    new_tokens: int | None = None
    padded_tokens: int | None = None
    seconds: float | None = None
    warmup_seconds: float | None = None
    note: str = ""

    @property
    def new_per_s(self) -> float | None:
        return self.new_tokens / self.seconds if self.seconds and self.new_tokens is not None else None

    @property
    def padded_per_s(self) -> float | None:
        return self.padded_tokens / self.seconds if self.seconds and self.padded_tokens is not None else None


# ------------------------------------------------------------------------------------------------ pure helpers
def pick_prompts(examples: Iterable[Any], n: int) -> list[str]:
    """``n`` fixed prompts, harmful and benign alternating (harmful first); harmful ones go round the categories.

    Deterministic: examples are ordered by id, whatever order they come in.
    """
    by_category: dict[str, list[Any]] = {}
    for example in sorted(examples, key=lambda e: e.id):
        if isinstance(example.prompt, str):
            by_category.setdefault(example.category, []).append(example)
    benign = by_category.pop("benign", [])
    harmful: list[Any] = []
    queues = [list(v) for _, v in sorted(by_category.items())]
    while any(queues):
        for queue in queues:
            if queue:
                harmful.append(queue.pop(0))
    picked: list[str] = []
    h = b = 0
    while len(picked) < n and (h < len(harmful) or b < len(benign)):
        take_harmful = (len(picked) % 2 == 0 and h < len(harmful)) or b >= len(benign)
        if take_harmful:
            picked.append(harmful[h].prompt)
            h += 1
        else:
            picked.append(benign[b].prompt)
            b += 1
    if len(picked) < n:
        raise ValueError(f"asked for {n} prompts, the data holds {len(picked)}")
    return picked


def count_new_tokens(new_ids: Sequence[Sequence[int]], eos_ids: Iterable[int]) -> tuple[int, int]:
    """(real, padded) token counts of a block of generated ids, one row per sequence.

    A row's real tokens run up to and including its first EOS (or to the end of the block without one); the padded
    count is every position of the block.
    """
    eos = set(eos_ids)
    real = padded = 0
    for row in new_ids:
        row = list(row)
        padded += len(row)
        length = len(row)
        for i, token in enumerate(row):
            if token in eos:
                length = i + 1
                break
        real += length
    return real, padded


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(int(v) for v in value)
    return ids


def speedups(rows: list[Row], reference: str = "dynamic") -> dict[str, float | None]:
    """Each row's new tokens/s over the reference row's (None where either is missing)."""
    ref = next((r.new_per_s for r in rows if r.backend == reference), None)
    return {r.backend: (r.new_per_s / ref if ref and r.new_per_s else None) for r in rows}


def markdown_table(rows: list[Row]) -> str:
    ups = speedups(rows)

    def num(value: float | int | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    lines = ["| backend | batch | new tokens | padded tokens | seconds | new tokens/s | padded tokens/s | "
             "speed-up vs dynamic |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.seconds is None:
            lines.append(f"| {r.backend} | {r.batch} | — | — | — | — | — | {r.note or 'skipped'} |")
            continue
        up = ups.get(r.backend)
        lines.append(f"| {r.backend} | {r.batch} | {num(r.new_tokens, 'd')} | {num(r.padded_tokens, 'd')} | "
                     f"{r.seconds:.3f} | {num(r.new_per_s, '.1f')} | {num(r.padded_per_s, '.1f')} | "
                     f"{num(up, '.2f')} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ backends
def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


def _run_timed(run_once: Callable[[], tuple[int, int | None]], device: Any, seed: int,
               ) -> tuple[float, int, int | None]:
    """One seeded run: (seconds, real new tokens, padded tokens)."""
    import torch

    torch.manual_seed(seed)
    _sync(device)
    started = time.perf_counter()
    real, padded = run_once()
    _sync(device)
    return time.perf_counter() - started, real, padded


def _sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.greedy:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}


def hf_runner(model: Any, tokenizer: Any, texts: list[str], args: argparse.Namespace, eos: set[int],
              **extra: Any) -> Callable[[], tuple[int, int]]:
    import torch

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    kwargs = {"max_new_tokens": args.max_new_tokens, "num_return_sequences": args.generations,
              "pad_token_id": tokenizer.pad_token_id, **_sampling_kwargs(args), **extra}

    def run_once() -> tuple[int, int]:
        with torch.no_grad():
            output = model.generate(**encoded, **kwargs)
        return count_new_tokens(output[:, encoded["input_ids"].shape[1]:].tolist(), eos)

    return run_once


class _Recorder:
    """Stands in for the model inside drirl.generation.generate and keeps what each generate() call returned."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.blocks: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, **kwargs: Any) -> Any:
        output = self._model.generate(**kwargs)
        self.blocks.append(output[:, kwargs["input_ids"].shape[1]:])
        return output


def drirl_runner(model: Any, tokenizer: Any, prompts: list[str], args: argparse.Namespace,
                 eos: set[int]) -> Callable[[], tuple[int, int]]:
    from drirl.generation import GenerationSettings, generate

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy, temperature=1.0,
                                  top_p=1.0, num_return_sequences=args.generations, batch_size=len(prompts),
                                  seed=args.seed)
    recorder = _Recorder(model)

    def run_once() -> tuple[int, int]:
        recorder.blocks.clear()
        generate(recorder, tokenizer, prompts, settings, progress=False, bf16="auto")
        real = padded = 0
        for block in recorder.blocks:
            r, p = count_new_tokens(block.tolist(), eos)
            real, padded = real + r, padded + p
        return real, padded

    return run_once


def drirl_uses_autocast(model: Any) -> bool:
    import torch

    from drirl.trainer_setup import resolve_bf16

    param = next(model.parameters())
    return param.device.type == "cpu" and param.dtype == torch.float32 and resolve_bf16("auto")


def vllm_runner(model_path: str, texts: list[str], args: argparse.Namespace) -> Callable[[], tuple[int, None]]:
    import vllm

    dtype = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(args.dtype_name, "auto")
    llm = vllm.LLM(model=model_path, dtype=dtype, seed=args.seed, gpu_memory_utilization=args.vllm_gpu_memory,
                   max_model_len=args.vllm_max_model_len)
    params = (vllm.SamplingParams(n=args.generations, max_tokens=args.max_new_tokens, temperature=0.0)
              if args.greedy else
              vllm.SamplingParams(n=args.generations, max_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0,
                                  top_k=-1, seed=args.seed))

    def run_once() -> tuple[int, None]:
        outputs = llm.generate(texts, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs), None

    return run_once


def make_runner(backend: str, model: Any, tokenizer: Any, model_path: str, prompts: list[str], texts: list[str],
                args: argparse.Namespace, eos: set[int]) -> Callable[[], tuple[int, int | None]] | None:
    """The backend's run-once function; None for vLLM when it is not installed."""
    if backend == "dynamic":
        return hf_runner(model, tokenizer, texts, args, eos)
    if backend == "static":
        return hf_runner(model, tokenizer, texts, args, eos, cache_implementation="static")
    if backend == "static+compile":
        from transformers import CompileConfig

        cuda = next(model.parameters()).device.type == "cuda"
        config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if cuda else "default")
        config._compile_all_devices = True  # transformers compiles only on accelerators otherwise
        return hf_runner(model, tokenizer, texts, args, eos, cache_implementation="static", compile_config=config)
    if backend == "drirl":
        return drirl_runner(model, tokenizer, prompts, args, eos)
    try:
        import vllm  # noqa: F401
    except ImportError:
        return None
    return vllm_runner(model_path, texts, args)


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:160]}"


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="policy alias or folder")
    parser.add_argument("--tiny", action="store_true", help="a tiny random 2-layer Llama (tests/tiny_models.py)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="demo",
                        help="preset prompts x generations x new tokens: demo 2x4x64 (the demo's align batch), "
                             "gpu 8x8x128; the three options below override it")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per batch")
    parser.add_argument("--generations", type=int, default=None, help="completions per prompt (num_return_sequences)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="new tokens per completion, at most")
    parser.add_argument("--backends", default="dynamic,static,drirl,vllm",
                        help=f"comma-separated subset of {','.join(BACKENDS)} (default: all but static+compile)")
    parser.add_argument("--compile", action="store_true", help="also run static+compile")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights dtype (auto: float32 on CPU, bfloat16 on CUDA)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (auto: cuda if available)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per backend after one warm-up; best counts")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling at temperature 1")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vllm-gpu-memory", type=float, default=0.3, help="vLLM gpu_memory_utilization")
    parser.add_argument("--vllm-max-model-len", type=int, default=2048)
    args = parser.parse_args(argv)
    prompts, generations, new_tokens = SHAPES[args.shape]
    args.prompts = args.prompts or prompts
    args.generations = args.generations or generations
    args.max_new_tokens = args.max_new_tokens or new_tokens
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.compile and "static+compile" not in wanted:
        wanted.insert(wanted.index("static") + 1 if "static" in wanted else len(wanted), "static+compile")
    unknown = [b for b in wanted if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    args.backend_list = wanted
    return args


def measure(args: argparse.Namespace) -> tuple[list[Row], str]:
    """Run every backend of ``args`` (from :func:`parse_args`); returns the rows and a line describing the set-up."""
    import torch

    from drirl.data.schema import load_bundled
    from drirl.generation import render_prompt
    from drirl.models import load_causal_lm, load_tokenizer, resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    args.dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, args.dtype_name)
    rows: list[Row] = []
    batch = f"{args.prompts}×{args.generations}"
    with tempfile.TemporaryDirectory(prefix="drirl-bench-rollout-") as tmp:
        reference = args.model
        if args.tiny:
            sys.path.insert(0, str(REPO / "tests"))
            from tiny_models import build_causal_lm

            reference = str(build_causal_lm(Path(tmp) / "tiny"))
        model_path = resolve_model(reference)
        tokenizer = load_tokenizer(reference)
        model = load_causal_lm(reference, dtype=dtype, tokenizer=tokenizer).to(device).eval()
        eos = eos_token_ids(model, tokenizer)
        prompts = pick_prompts(load_bundled(split="train"), args.prompts)
        # In drirl.generation.generate's order (by rendered length), so that every backend samples alike.
        prompts.sort(key=lambda p: len(render_prompt(tokenizer, p)))
        texts = [render_prompt(tokenizer, p) for p in prompts]
        prompt_lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        autocast = drirl_uses_autocast(model)
        runners: dict[str, Callable[[], tuple[int, int | None]]] = {}
        for backend in args.backend_list:
            label = backend + (" (bf16 autocast)" if backend == "drirl" and autocast else "")
            row = Row(label, batch)
            rows.append(row)
            try:
                runner = make_runner(backend, model, tokenizer, model_path, prompts, texts, args, eos)
                if runner is None:
                    row.note = "not installed"
                    continue
                row.warmup_seconds = _run_timed(runner, device, args.seed)[0]  # compilation, allocator, kernels
                runners[label] = runner
                print(f"{backend}: warm-up {row.warmup_seconds:.1f} s", file=sys.stderr)
            except Exception as err:  # a failing backend is a row, not the end of the benchmark
                row.note = f"failed ({_reason(err)})"
                print(f"{backend}: {row.note}", file=sys.stderr)
        # Round robin (A B C A B C ...) so that drift in machine load hits every backend alike; the fastest counts.
        for _ in range(args.repeats):
            for row in rows:
                if row.backend not in runners:
                    continue
                try:
                    seconds, real, padded = _run_timed(runners[row.backend], device, args.seed)
                except Exception as err:  # e.g. out of memory on a larger shape
                    row.note, row.seconds = f"failed ({_reason(err)})", None
                    runners.pop(row.backend)
                    continue
                if row.seconds is None or seconds < row.seconds:
                    row.seconds, row.new_tokens, row.padded_tokens = seconds, real, padded
                print(f"{row.backend}: {seconds:.3f} s, {real} new tokens", file=sys.stderr)
        for row in rows:
            if row.backend == "static+compile" and row.seconds is not None:
                row.note = f"warm-up incl. compilation {row.warmup_seconds:.1f} s"
    setup = (f"model {'tiny random 2-layer Llama' if args.tiny else args.model}, device {device}, dtype "
             f"{args.dtype_name}, torch {torch.__version__}, threads {torch.get_num_threads()}; {args.prompts} "
             f"prompts ({min(prompt_lengths)}-{max(prompt_lengths)} prompt tokens) × {args.generations} generations, "
             f"≤{args.max_new_tokens} new tokens, {'greedy' if args.greedy else 'sampling at temperature 1'}; "
             f"best of {args.repeats} rounds (backends in turn) after a warm-up")
    return rows, setup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows, setup = measure(args)
    print(f"\n{setup}\n")
    print(markdown_table(rows))
    notes = [f"{r.backend}: {r.note}" for r in rows if r.note and r.seconds is not None]
    for note in notes:
        print(f"\n- {note}", end="")
    print("\n" if notes else "", end="")
    command = shlex.join(["python", "benchmarks/bench_rollout.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\nrerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
