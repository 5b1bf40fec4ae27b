"""Benchmark: peak resident memory (RSS) of `drirl demo`, or of any command, per pipeline stage.

The command runs as a child process; every --interval seconds the RSS of its whole process tree (the child and all
its descendants, summed, from /proc/<pid>/status VmRSS; no extra dependency) is sampled. The child's output is
passed through to stderr, and its log lines "stage NAME: run (...)" (drirl.pipeline's logger) split the run into
stages: each sample counts for the stage running when it was taken. The table gives each stage's peak and duration,
the whole run's peak against the --target (default 8 GiB), and the kernel's own peak of the largest single process
(getrusage ru_maxrss), which no sampling interval can miss.

Summed RSS counts pages shared between processes of the tree once per process (an overestimate when the command
forks workers); a spike shorter than the interval can fall between two samples (compare with ru_maxrss).

usage:
  python benchmarks/bench_memory.py                       # drirl demo --output <temporary folder> (~20 min on 2 cores)
  python benchmarks/bench_memory.py --quick               # the same with a few-minute configuration
  python benchmarks/bench_memory.py --threads 1 --quick --json /tmp/memory.json
  python benchmarks/bench_memory.py -- python -c "a = bytearray(500 * 2**20); import time; time.sleep(2)"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

GIB = 2**30
# "stage NAME: run (new)", "run (unfinished)", "run (settings changed: ...)"; older runs logged "running".
STAGE_LINE = re.compile(r"\bstage (\S+): (running|run \(|complete, skipping)")
START_UP = "(start-up)"

# --quick: every key is a field of that section's config dataclass (RunConfig, RewardTrainConfig, AlignConfig,
# EvalConfig), so `drirl demo --set` accepts it. Batch shapes (batch sizes, lengths, new tokens) stay the demo's, so
# that each stage's peak is representative; only the amounts of work shrink. run.data=<a small slice of the bundled
# data> is added by quick_overrides(): it also feeds the reward models' held-out evaluation and the evaluation stages
# (its test split), which otherwise sample all 116 bundled test prompts.
QUICK_OVERRIDES = (
    "reward.max_prompts_per_category=2",  # 8 reward models of a few steps each (demo: 24 prompts per category)
    "reward.num_train_epochs=1",
    "align.max_steps=2",  # two GRPO-S steps of the demo's shape (2 prompts × G=4, ≤64 new tokens)
    "align.save_steps=1",  # and checkpoints written, as the demo does every 10 steps
    "eval.qa_limit=5",
    "eval.max_jailbreak_prompts=1",
    "eval.bootstrap_resamples=100",
)
QUICK_PER_CATEGORY = 4  # train and test examples per category (8 categories with benign: 32 test prompts, one
#                         full evaluation batch of the demo's eval.batch_size 32)


# ------------------------------------------------------------------------------------------------ /proc sampling
def parent_map(proc: Path = Path("/proc")) -> dict[int, int]:
    """pid → parent pid of every process visible in /proc."""
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat.rpartition(")")[2].split()
        if len(fields) >= 2:
            parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(root: int, parents: dict[int, int]) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    return tree


def vmrss_bytes(pid: int, proc: Path = Path("/proc")) -> int:
    """VmRSS of one process in bytes; 0 once it has exited (or for a kernel thread, which has none)."""
    try:
        with open(proc / str(pid) / "status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # reported in kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_bytes(root: int) -> int:
    """Summed VmRSS of ``root`` and its descendants."""
    return sum(vmrss_bytes(pid) for pid in process_tree(root, parent_map()))


def parse_stage(line: str) -> str | None:
    """The stage a drirl log line starts ("stage X: run (new)" → "X"; a skipped one → "X (skipped)"), else None."""
    match = STAGE_LINE.search(line)
    if not match:
        return None
    return f"{match.group(1)} (skipped)" if match.group(2) == "complete, skipping" else match.group(1)


# ------------------------------------------------------------------------------------------------ the monitor
@dataclass
class StageRecord:
    stage: str
    start_s: float
    end_s: float | None = None
    peak_rss_bytes: int = 0

    @property
    def seconds(self) -> float:
        return (self.end_s or self.start_s) - self.start_s


@dataclass
class Measurement:
    command: list[str]
    interval_s: float
    exit_code: int | None = None
    seconds: float = 0.0
    peak_rss_bytes: int = 0
    peak_at_s: float = 0.0
    peak_stage: str = START_UP
    ru_maxrss_bytes: int | None = None
    stages: list[StageRecord] = field(default_factory=list)
    samples: list[tuple[float, int]] = field(default_factory=list)

    def to_dict(self, target_gib: float, machine: dict | None = None) -> dict:
        return {"command": self.command, "exit_code": self.exit_code, "seconds": round(self.seconds, 1),
                "interval_s": self.interval_s, "target_gib": target_gib,
                "peak_rss_bytes": self.peak_rss_bytes, "peak_rss_gib": round(self.peak_rss_bytes / GIB, 3),
                "peak_at_s": round(self.peak_at_s, 1), "peak_stage": self.peak_stage,
                "ru_maxrss_bytes": self.ru_maxrss_bytes,
                "stages": [{**asdict(s), "peak_rss_gib": round(s.peak_rss_bytes / GIB, 3),
                            "seconds": round(s.seconds, 1)} for s in self.stages],
                "samples": [[round(t, 2), rss] for t, rss in self.samples], "machine_at_start": machine}


class Monitor:
    """Runs a command, passes its output through, follows its stages and samples its tree's RSS."""

    def __init__(self, command: list[str], interval: float = 0.5, env: dict[str, str] | None = None,
                 log: Path | None = None, echo: bool = True) -> None:
        self.command, self.interval, self.env, self.log, self.echo = command, interval, env, log, echo
        self.result = Measurement(command=command, interval_s=interval)
        self._lock = threading.Lock()
        self._started = 0.0

    def _now(self) -> float:
        return time.monotonic() - self._started

    def _enter_stage(self, name: str) -> None:
        with self._lock:
            now = self._now()
            if self.result.stages:
                self.result.stages[-1].end_s = now
            self.result.stages.append(StageRecord(name, now))

    def _pump(self, stream) -> None:
        """Copy the child's output to stderr (and the log); watch it for stage lines."""
        log = open(self.log, "wb") if self.log else None  # closed below
        pending = b""
        try:
            while True:
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    break
                if self.echo:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
                if log:
                    log.write(chunk)
                pending += chunk
                *lines, pending = re.split(rb"[\r\n]", pending)
                for line in lines:
                    stage = parse_stage(line.decode("utf-8", "replace"))
                    if stage:
                        self._enter_stage(stage)
        finally:
            if log:
                log.close()

    def sample(self, pid: int) -> None:
        rss = tree_rss_bytes(pid)
        with self._lock:
            now = self._now()
            self.result.samples.append((now, rss))
            stage = self.result.stages[-1]
            stage.peak_rss_bytes = max(stage.peak_rss_bytes, rss)
            if rss > self.result.peak_rss_bytes:
                self.result.peak_rss_bytes, self.result.peak_at_s, self.result.peak_stage = rss, now, stage.stage

    def run(self) -> Measurement:
        self._started = time.monotonic()
        self.result.stages.append(StageRecord(START_UP, 0.0))
        # A session of its own, so that an interrupt can stop the whole tree this benchmark started.
        proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        pump = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        pump.start()
        try:
            while proc.poll() is None:
                self.sample(proc.pid)
                time.sleep(self.interval)
        except KeyboardInterrupt:
            print("bench_memory: interrupted; stopping the command", file=sys.stderr)
            os.killpg(proc.pid, 15)
            proc.wait()
        pump.join(timeout=5)
        with self._lock:
            self.result.seconds = self._now()
            self.result.stages[-1].end_s = self.result.seconds
        self.result.exit_code = proc.returncode
        # Largest single descendant this process has waited for, in KiB on Linux: the kernel's exact peak.
        self.result.ru_maxrss_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        self.result.stages = [s for s in self.result.stages if s.stage != START_UP or s.seconds > 0]
        return self.result


# ------------------------------------------------------------------------------------------------ the command
def machine_info() -> dict:
    info: dict = {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(("MemTotal:", "MemAvailable:")):
                key, value = line.split(":")
                info[key.lower() + "_gib"] = round(int(value.split()[0]) * 1024 / GIB, 1)
    except OSError:
        pass
    return info


def drirl_command() -> list[str]:
    """The `drirl` console script of this interpreter's environment, else ``python -m drirl.cli``."""
    script = Path(sys.executable).parent / "drirl"
    if script.is_file():
        return [str(script)]
    found = shutil.which("drirl")
    return [found] if found else [sys.executable, "-m", "drirl.cli"]


def write_quick_data(folder: Path, per_category: int = QUICK_PER_CATEGORY) -> Path:
    """The first ``per_category`` train and test examples of each bundled category (by id), as a JSONL file."""
    from drirl.data.schema import load_bundled

    kept: dict[tuple[str, str], int] = {}
    lines = []
    for example in sorted(load_bundled(), key=lambda e: e.id):
        key = (example.split, example.category)
        if kept.get(key, 0) < per_category:
            kept[key] = kept.get(key, 0) + 1
            lines.append(json.dumps(example.to_dict()) + "\n")
    path = folder / "quick-data.jsonl"
    path.write_text("".join(lines))
    return path


def quick_overrides(folder: Path) -> list[str]:
    sets = [*QUICK_OVERRIDES, f"run.data={write_quick_data(folder)}"]
    return [arg for item in sets for arg in ("--set", item)]


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this script's options, the command after ``--``)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def render(result: Measurement, target_gib: float) -> str:
    lines = ["| stage | peak RSS (GiB) | seconds |", "|---|---:|---:|"]
    for stage in result.stages:
        lines.append(f"| {stage.stage} | {stage.peak_rss_bytes / GIB:.2f} | {stage.seconds:.0f} |")
    lines.append(f"| **whole run** | **{result.peak_rss_bytes / GIB:.2f}** | **{result.seconds:.0f}** |")
    peak = result.peak_rss_bytes / GIB
    verdict = "within" if peak <= target_gib else "OVER"
    lines += ["", f"peak RSS of the process tree: {peak:.2f} GiB at {result.peak_at_s:.0f} s "
                  f"(stage {result.peak_stage}), {verdict} the {target_gib:g} GiB target "
                  f"({100 * peak / target_gib:.0f}%); {len(result.samples)} samples every {result.interval_s:g} s"]
    if result.ru_maxrss_bytes:
        lines.append(f"kernel peak of the largest single process (getrusage ru_maxrss): "
                     f"{result.ru_maxrss_bytes / GIB:.2f} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = split_command(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [options] [-- COMMAND ...]")
    parser.add_argument("--quick", action="store_true",
                        help="a few-minute demo: " + " ".join(QUICK_OVERRIDES)
                        + f" run.data=<{QUICK_PER_CATEGORY} train and test examples per bundled category>")
    parser.add_argument("--output", default=None, help="the demo's run folder (default: a temporary one, removed)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="one more override passed to `drirl demo` (repeatable)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default: 0.5)")
    parser.add_argument("--target", type=float, default=8.0, help="GiB the peak is compared with (default: 8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS/MKL_NUM_THREADS of the command (torch's intra-op threads)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the figures (and samples) here")
    parser.add_argument("--log", metavar="PATH", default=None, help="also write the command's output here")
    parser.add_argument("--quiet", action="store_true", help="do not pass the command's output through")
    args = parser.parse_args(own)
    if command and (args.quick or args.set or args.output):
        parser.error("--quick, --set and --output apply to the default `drirl demo` command, not to `-- COMMAND`")

    scratch = Path(tempfile.mkdtemp(prefix="drirl-bench-memory-"))
    try:
        if not command:
            output = args.output or str(scratch / "demo")
            command = [*drirl_command(), "demo", "--output", output]
            if args.quick:
                command += quick_overrides(scratch)
            for item in args.set:
                command += ["--set", item]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        machine = machine_info()
        print(f"bench_memory: running {shlex.join(command)}", file=sys.stderr)
        monitor = Monitor(command, args.interval, env, Path(args.log) if args.log else None, echo=not args.quiet)
        result = monitor.run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nmachine: {machine['cpus']} CPUs, {machine.get('memtotal_gib', '?')} GiB "
          f"({machine.get('memavailable_gib', '?')} GiB available at start), load average at start "
          f"{machine['load_average'][0]:.2f}" + (f"; command threads {args.threads}" if args.threads else ""))
    print(f"command: {shlex.join(command)} (exit status {result.exit_code})\n")
    print(render(result, args.target))
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(args.target, machine), indent=1) + "\n")
        print(f"figures written to {args.json}")
    print(f"\nrerun: {shlex.join(['python', 'benchmarks/bench_memory.py', *argv])}")
    return result.exit_code or 0


if __name__ == "__main__":
    sys.exit(main())
