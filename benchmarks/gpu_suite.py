"""Every GPU-only measurement of the benchmarks in one command, sized for a short GPU window (under 8 minutes on
one H200): Markdown tables ready for the docs on stdout, and a JSON of the results with the machine, the library
versions, the date and the exact command of each measurement.

    python benchmarks/gpu_suite.py --output gpu_suite.json                      # on a GPU machine
    OMP_NUM_THREADS=1 python benchmarks/gpu_suite.py --smoke --device cpu --output smoke.json   # the suite's CPU check

Each part runs a benchmark script's own measurement function in this process, parsed from the command line it
records (so ``python benchmarks/<script> <arguments>`` repeats it alone); the recipe runs as a subprocess:

  trainer          trainer_speed.py: DistillationTrainer steps/s against the eager bare loop (target >= 1.0x,
                   stretch 2x) and an LTKD step against a KD step (target <= 1.05x)
  loss             loss_speed.py --launches: LTKD loss forward + backward against KD (target <= 1.5x), with the
                   operators and CUDA kernels each launches (the times on a GPU are launch-bound); then at C = 100,
                   K = 3 both through torch.compile (inductor), as the trainer runs them with torch_compile
  compile          trainer_speed.py --loops ...: the trainer with torch_compile against eager and the bare loop
  teacher_cache    trainer_speed.py --loops bare,ltkd,ltkd-cached: the trainer reading the teacher-logit cache
                   against the bare loop running the teacher online
  in_memory        pipeline_speed.py: in-memory uint8 data augmented on the device against the PIL pipeline
  features         loss_speed.py --features and trainer_speed.py --loops kd,reviewkd,catkd: the feature losses'
                   cost against KD, loss alone and whole training step
  mixed_precision  mixed_precision_check.py: the trainer under bf16 and fp16 autocast against fp32
  recipe_bf16      recipes/run_distill.py --bf16 true, one epoch per stage, end to end

Every part has a time budget, enforced (together they stay under 8 minutes): a part that runs over, or fails, is
recorded as such with its error and the suite goes on. The budgets are sized for one H200; full sizes on a CPU
exceed them. The JSON is rewritten after every part, so a run cut short keeps what it measured.

Without a CUDA device the suite refuses, unless --device cpu or --smoke is given: then it runs on the CPU and every
row says CPU. --smoke takes tiny sizes and few steps: it checks the suite itself, its numbers measure nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

# The benchmark scripts (and through them transformers, timm, ltkd_hf) are imported by the parts that run them, so
# that --help and the refusal without a GPU answer at once.

REPO = Path(__file__).resolve().parents[1]
RECIPE = "recipes/run_distill.py"
TRAINER_TARGET, TRAINER_STRETCH = 1.0, 2.0  # trainer steps/s / eager bare loop steps/s: at least
LTKD_STEP_TARGET = 1.05  # LTKD training step time / KD step time: at most
LTKD_LOSS_TARGET = 1.5  # LTKD loss forward + backward time / KD's: at most
# trainer_speed.py's --smoke sizes in every part that runs it: a 2-image batch of 8x8 images, 1 + 2 steps, one round
TRAINER_SPEED_SMOKE = ["--batch", "2", "--image_size", "8", "--steps", "2", "--warmup", "1", "--rounds", "1"]


@dataclass
class Setup:
    """What every part needs: the device (``cuda`` or ``cpu``), its label for the tables, whether the sizes are the
    smoke ones, and a scratch folder."""

    device: str
    label: str
    smoke: bool
    workdir: Path

    def sized(self, full: list[str], smoke: list[str]) -> list[str]:
        """The size arguments of a script's command: ``smoke`` with --smoke, else ``full``."""
        return smoke if self.smoke else full

    @property
    def bf16(self) -> list[str]:
        """trainer_speed.py's precision flag: bf16 on the GPU; fp32 on the CPU, where the trainer keeps the teacher
        in float32 and bf16 autocast is slow."""
        return ["--bf16"] if self.device == "cuda" else []


@dataclass
class Outcome:
    """What a part measured: the commands (each repeats its measurement alone), the raw results, Markdown tables and
    checks (``check``, ``target``, ``measured``, ``value``, ``met``; target and met are None where none exists)."""

    commands: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str, value: float, *, at_least: float | None = None, at_most: float | None = None,
              stretch: float | None = None) -> None:
        """Record a ratio ``value`` against its target, if it has one."""
        target, met = None, None
        if at_least is not None:
            target, met = f">= {at_least:g}x" + (f" (stretch {stretch:g}x)" if stretch else ""), value >= at_least
        elif at_most is not None:
            target, met = f"<= {at_most:g}x", value <= at_most
        measured = f"{value:.3f}x"
        if stretch is not None and value >= stretch:
            measured += " (stretch met)"
        self.checks.append({"check": name, "target": target, "measured": measured, "value": value, "met": met})


class PartTimeout(BaseException):
    """A part ran over its time budget (a BaseException, as KeyboardInterrupt, so that no library's
    ``except Exception`` fallback swallows it)."""


class PartFailed(Exception):
    """A part ran to its end but failed; ``outcome`` holds what it measured."""

    def __init__(self, message: str, outcome: Outcome):
        super().__init__(message)
        self.outcome = outcome


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in this (main) thread once ``seconds`` have passed."""

    def expire(signum, frame):
        raise PartTimeout(f"ran over its {seconds:g} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_script(module, argv: list[str], outcome: Outcome) -> Any:
    """Run a benchmark script's measurement as ``python benchmarks/<script> <argv>`` would, in this process; the
    command goes into ``outcome``."""
    opts = module.build_parser().parse_args(argv)
    outcome.commands.append(f"python benchmarks/{Path(module.__file__).name} {shlex.join(argv)}")
    return module.measure(opts)


def trainer_speed_run(setup: Setup, argv: list[str], out: Outcome) -> dict[str, float]:
    """trainer_speed.py with ``argv`` on the setup's device and precision: its median steps/s, recorded in ``out``
    with its table."""
    import trainer_speed

    med = run_script(trainer_speed, ["--device", setup.device, *setup.bf16, *argv], out)
    out.results["steps_per_s"] = med
    out.tables.append(trainer_speed.markdown(med))
    return med


def trainer_part(setup: Setup) -> Outcome:
    """trainer_speed.py's five loops: the trainer against the bare loop, LTKD against KD."""
    out = Outcome()
    # 15 runs of 110 steps at about 13-15 ms a step on an H200, plus about 1.5 s to set each up.
    sizes = setup.sized(["--steps", "100", "--warmup", "10", "--rounds", "3"], TRAINER_SPEED_SMOKE)
    med = trainer_speed_run(setup, sizes, out)
    for ltkd, kd, suffix in (("ltkd", "kd", ""), ("ltkd-nosync", "kd-nosync", ", no per-step sync")):
        out.check(f"trainer (LTKD{suffix}) / bare loop, steps/s", med[ltkd] / med["bare"],
                  at_least=TRAINER_TARGET, stretch=TRAINER_STRETCH)
        out.check(f"LTKD step / KD step time (trainer{suffix})", med[kd] / med[ltkd], at_most=LTKD_STEP_TARGET)
    return out


def loss_part(setup: Setup) -> Outcome:
    """loss_speed.py --launches: the losses' times and what each launches."""
    import loss_speed

    out = Outcome()
    sizes = setup.sized(["--repeats", "100"], ["--batch", "8", "--repeats", "2"])
    rows = run_script(loss_speed, ["--device", setup.device, "--launches", *sizes], out)
    out.results["rows"] = rows
    out.tables.append(loss_speed.markdown(rows))
    paper = next(r for r in rows if (r["C"], r["K"]) == (100, 3))
    out.check("LTKD / KD loss time at C=100, K=3", paper["ltkd"] / paper["kd"], at_most=LTKD_LOSS_TARGET)
    out.check("LTKD / KD loss time, worst point", max(r["ltkd"] / r["kd"] for r in rows), at_most=LTKD_LOSS_TARGET)
    counted = "kernels" if setup.device == "cuda" else "ops"
    out.check(f"LTKD / KD {counted} launched at C=100, K=3", paper[f"ltkd_{counted}"] / paper[f"kd_{counted}"])
    # Compiled, at the paper's point only (each point compiles both losses); aot_eager on the smoke run needs no C++
    # toolchain.
    backend = setup.sized(["--compile", "inductor"], ["--compile", "aot_eager"])
    rows = run_script(loss_speed, ["--device", setup.device, "--launches", "--classes", "100", "--groups", "3",
                                   *backend, *sizes], out)
    out.results["compiled_rows"] = rows
    out.tables.append(loss_speed.markdown(rows))
    paper = rows[0]
    out.check("LTKD compiled / KD compiled loss time at C=100, K=3", paper["ltkd_compiled"] / paper["kd_compiled"],
              at_most=LTKD_LOSS_TARGET)
    out.check("LTKD compiled / KD (eager) loss time at C=100, K=3", paper["ltkd_compiled"] / paper["kd"])
    out.check(f"LTKD compiled / KD compiled {counted} launched at C=100, K=3",
              paper[f"ltkd_compiled_{counted}"] / paper[f"kd_compiled_{counted}"])
    return out


def compile_part(setup: Setup) -> Outcome:
    """trainer_speed.py with torch_compile against the eager trainer and the bare loop."""
    out = Outcome()
    # One round: each round compiles both models again; the warm-up steps hold the compilation.
    sizes = setup.sized(["--steps", "300", "--warmup", "10", "--rounds", "1"],
                        [*TRAINER_SPEED_SMOKE, "--compile_backend", "aot_eager"])  # no C++ toolchain needed on the CPU
    med = trainer_speed_run(setup, ["--loops", "bare,ltkd-nosync,ltkd-compiled", *sizes], out)
    out.check("trainer (LTKD, no per-step sync, torch_compile) / bare loop, steps/s",
              med["ltkd-compiled"] / med["bare"], at_least=TRAINER_TARGET, stretch=TRAINER_STRETCH)
    out.check("torch_compile / eager trainer (LTKD, no per-step sync), steps/s",
              med["ltkd-compiled"] / med["ltkd-nosync"])
    return out


def teacher_cache_part(setup: Setup) -> Outcome:
    """trainer_speed.py with the teacher-logit cache against the online teacher (trainer and bare loop)."""
    out = Outcome()
    # One round: 4 runs of 110 steps (the first fills the cache), about 3 s each on an H200.
    sizes = setup.sized(["--steps", "100", "--warmup", "10", "--rounds", "1"], TRAINER_SPEED_SMOKE)
    med = trainer_speed_run(setup, ["--loops", "bare,ltkd,ltkd-cached", *sizes], out)
    out.check("trainer (LTKD, teacher-logit cache) / bare loop (online teacher), steps/s",
              med["ltkd-cached"] / med["bare"])
    out.check("trainer (LTKD, teacher-logit cache) / trainer (LTKD, online teacher), steps/s",
              med["ltkd-cached"] / med["ltkd"])
    return out


def in_memory_part(setup: Setup) -> Outcome:
    """pipeline_speed.py: PIL pipeline, in-memory data with device augmentation, bare loop."""
    import pipeline_speed

    out = Outcome()
    # Two rounds: each of the 6 runs also loads the image folder (and decodes it, in memory) before timing.
    sizes = setup.sized(["--steps", "100", "--warmup", "10", "--rounds", "2"],
                        ["--batch", "4", "--steps", "2", "--warmup", "1", "--rounds", "1", "--per-class", "2"])
    med = run_script(pipeline_speed, ["--device", setup.device, *sizes], out)
    out.results["steps_per_s"] = med
    out.tables.append(pipeline_speed.markdown(med))
    out.check("in-memory + device augmentation / PIL pipeline, steps/s", med["in_memory"] / med["pipeline"])
    out.check("in-memory + device augmentation / bare loop, steps/s", med["in_memory"] / med["bare"])
    return out


def features_part(setup: Setup) -> Outcome:
    """loss_speed.py --features, and trainer_speed.py's KD, ReviewKD and CAT-KD steps."""
    import loss_speed

    out = Outcome()
    sizes = setup.sized(["--batch", "64", "--repeats", "20"],
                        ["--batch", "2", "--repeats", "1", "--pair", "resnet32x4-resnet8x4"])
    rows = run_script(loss_speed, ["--device", setup.device, "--features", *sizes], out)
    out.results["loss_rows"] = rows
    out.tables.append(loss_speed.markdown_features(rows))
    sizes = setup.sized(["--steps", "100", "--warmup", "10", "--rounds", "2"], TRAINER_SPEED_SMOKE)
    med = trainer_speed_run(setup, ["--loops", "kd,reviewkd,catkd", *sizes], out)
    for loss, name in (("reviewkd", "ReviewKD"), ("catkd", "CAT-KD")):
        out.check(f"{name} / KD loss time, worst pair", max(r[loss] / r["kd"] for r in rows))
        out.check(f"{name} step / KD step time (trainer)", med["kd"] / med[loss])
    return out


def mixed_precision_part(setup: Setup) -> Outcome:
    """mixed_precision_check.py: each half precision's run against fp32."""
    import mixed_precision_check

    out = Outcome()
    argv = ["--device", setup.device]
    if setup.device == "cpu":  # fp16 autocast on a CPU is neither what the check is about nor fast
        argv += ["--precisions", "bf16"]
    sizes = setup.sized([], ["--batch", "2", "--steps", "2", "--image_size", "8"])
    results = run_script(mixed_precision_check, [*argv, *sizes], out)
    out.results["precisions"] = results
    lines = ["| precision | teacher dtype | teacher frozen | student moved | finite | first step vs fp32 (relative) |",
             "|---|---|---|---|---|---|"]
    for precision, r in results.items():
        rel = ", ".join(f"{k} {v:.1e}" for k, v in r["relative_difference"].items())
        lines.append(f"| {precision} | {r['teacher_dtype']} | {r['teacher_frozen']} | {r['student_moved']} "
                     f"| {r['finite']} | {rel} |")
        out.checks.append({
            "check": f"{precision}: teacher dtype, frozen, student moved, finite, first step within "
                     f"{mixed_precision_check.MAX_RELATIVE_DIFFERENCE:g} of fp32 (of each term, or of "
                     f"{mixed_precision_check.FLOOR_SHARE_OF_LOSS:g} x the loss for a smaller term)",
            "target": "all hold", "measured": "OK" if r["ok"] else "FAIL", "value": None, "met": r["ok"],
        })
    out.tables.append("\n".join(lines))
    return out


def recipe_argv(setup: Setup, output_dir: Path) -> list[str]:
    """The demo's command, made short: one epoch per stage (one step with --smoke), in bf16. The demo's 5 warm-up
    epochs would outlast the one-epoch stages and its learning-rate decay at epochs 20 and 25 would never come,
    which the recipe refuses: both are turned off."""
    argv = ["--warmup_epochs", "0", "--lr_decay_epochs", "none", "--bf16", "true", "--output_dir", str(output_dir)]
    if setup.device == "cpu":
        argv += ["--use_cpu", "true"]
    if setup.smoke:  # bf16 on a CPU without bf16 instructions (AVX2 only) takes seconds a batch: one step per stage,
        # the teacher and the LTKD student alone, 8x8 inputs, batches of 8 (16x16 took 81 s of the 70 s budget on a
        # 2-core AVX2 machine with the KD student, 8x8 28 s; batches of 8 instead of the demo's 64: 41 -> 30 s), and
        # timm's tiny test_resnet for both models: scoring the test split with the CIFAR ResNets took 11 s of it
        return argv + ["--max_steps", "1", "--compare_ce_student", "false", "--compare_kd_student", "false",
                       "--input_size", "8", "--per_device_train_batch_size", "8",
                       "--teacher_architecture", "test_resnet", "--student", "test_resnet"]
    return argv + ["--num_train_epochs", "1", "--teacher_epochs", "1"]


def recipe_part(setup: Setup) -> Outcome:
    """The distillation recipe with --bf16 true, one epoch per stage, as a subprocess; fails unless it exits 0
    and writes the student's report."""
    out = Outcome()
    folder = setup.workdir / "recipe_bf16"
    argv = recipe_argv(setup, folder / "run")
    out.commands.append(f"python {RECIPE} {shlex.join(argv)}")
    start = time.perf_counter()
    # The budget's PartTimeout, raised while this waits, kills the recipe (subprocess.run does on any exception).
    proc = subprocess.run([sys.executable, RECIPE, *argv], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    report = folder / "run" / "student" / "report.json"
    ok = proc.returncode == 0 and report.is_file()
    out.results = {"returncode": proc.returncode, "seconds": seconds, "student_report": report.is_file()}
    if not ok:
        out.results["output_tail"] = (proc.stdout + proc.stderr)[-3000:]
    measured = f"exit {proc.returncode} in {seconds:.1f} s" + ("" if report.is_file() else ", no report")
    out.checks.append({"check": f"{RECIPE} --bf16 true completes", "target": "exit 0 and the student's report.json",
                       "measured": measured, "value": None, "met": ok})
    if not ok:
        raise PartFailed(f"{RECIPE} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-500:]}", out)
    return out


# name, title, budget in seconds on one H200, the part
PARTS: list[tuple[str, str, float, Callable[[Setup], Outcome]]] = [
    ("trainer", "DistillationTrainer against the eager bare loop; LTKD step against KD step", 70, trainer_part),
    ("loss", "LTKD loss against KD loss, forward + backward, eager and compiled, with the launches of each", 55,
     loss_part),
    ("compile", "The compiled trainer (torch_compile) against eager", 100, compile_part),
    ("teacher_cache", "The trainer reading the teacher-logit cache against the online teacher", 30, teacher_cache_part),
    ("in_memory", "In-memory uint8 data with device augmentation against the PIL pipeline", 55, in_memory_part),
    ("features", "The feature losses (ReviewKD, CAT-KD) against KD: loss alone and training step", 60, features_part),
    ("mixed_precision", "Mixed precision (bf16, fp16) against fp32 in the trainer", 40, mixed_precision_part),
    ("recipe_bf16", f"{RECIPE} --bf16 true end to end, one epoch per stage", 70, recipe_part),
]


def run_part(title: str, budget_s: float, part: Callable[[Setup], Outcome], setup: Setup) -> dict[str, Any]:
    """One part under its budget: its record for the JSON (status ok / failed / timed out, seconds, what it measured),
    whatever happened inside."""
    start = time.perf_counter()
    status, error, outcome = "ok", None, Outcome()
    try:  # stdout holds the Markdown only: what the trainers print goes to stderr
        with time_limit(budget_s), redirect_stdout(sys.stderr):
            outcome = part(setup)
    except PartTimeout as err:
        status, error = "timed out", str(err)
    except PartFailed as err:
        status, error, outcome = "failed", str(err), err.outcome
    except Exception as err:  # a failing part is a result; the other parts still run
        status, error = "failed", f"{type(err).__name__}: {err}"
    return {
        "title": title,
        "device": setup.label,
        "status": status,
        "error": error,
        "seconds": time.perf_counter() - start,
        "budget_s": budget_s,
        "commands": outcome.commands,
        "results": outcome.results,
        "checks": [{**c, "device": setup.label} for c in outcome.checks],
        "tables": outcome.tables,
    }


def markdown_part(record: dict[str, Any]) -> str:
    """A part's section for the docs: title, commands, tables, checks."""
    lines = [f"### {record['title']} ({record['device']})", ""]
    lines += [f"`{command}`" + "  " for command in record["commands"]]
    lines.append(f"{record['status']} in {record['seconds']:.1f} s (budget {record['budget_s']:g} s)")
    if record["error"]:
        lines.append(f"\nError: {record['error']}")
    for table in record["tables"]:
        lines += ["", table]
    if record["checks"]:
        lines += ["", "| check | device | target | measured | met? |", "|---|---|---|---|---|"]
        for c in record["checks"]:
            met = "—" if c["met"] is None else ("yes" if c["met"] else "**no**")
            lines.append(f"| {c['check']} | {c['device']} | {c['target'] or '—'} | {c['measured']} | {met} |")
    return "\n".join(lines)


def machine(device: str) -> dict[str, Any]:
    """The machine the suite ran on."""
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "gpu_count": torch.cuda.device_count() if device == "cuda" else 0,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def versions() -> dict[str, Any]:
    """The versions of what was measured."""
    import ltkd_hf  # the working tree's, which need not be an installed distribution

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        **{name: importlib.metadata.version(name) for name in ("transformers", "timm", "accelerate", "datasets")},
        "ltkd_hf": ltkd_hf.__version__,
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the JSON of the results."""
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The suite's command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where to measure (default cuda)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes and few steps: checks the suite, measures nothing"
    )
    parser.add_argument("--output", default="gpu_suite.json", help="the JSON of the results (default gpu_suite.json)")
    parser.add_argument("--only", help=f"comma-separated parts to run (default all: {','.join(p[0] for p in PARTS)})")
    return parser


def main() -> None:
    parser = build_parser()
    opts = parser.parse_args()
    names = [p[0] for p in PARTS]
    only = names if opts.only is None else opts.only.split(",")
    if not only or set(only) - set(names):
        parser.error(f"--only {opts.only!r}: give a comma-separated list of {', '.join(names)}")
    device = opts.device
    if device == "cuda" and not torch.cuda.is_available():
        if not opts.smoke:
            raise SystemExit(
                "gpu_suite.py: no CUDA device is available, so there are no GPU numbers to measure. Run it on a GPU "
                "machine, or pass --device cpu (CPU numbers, labelled CPU) or --smoke (tiny sizes, to check the suite)."
            )
        print("No CUDA device: the smoke run goes on the CPU; every row says CPU.", file=sys.stderr)
        device = "cpu"
    label = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    command = shlex.join(["python", "benchmarks/gpu_suite.py", *sys.argv[1:]])
    started = datetime.datetime.now(datetime.timezone.utc)
    library = versions()
    print(f"## GPU suite: {label}{' (smoke run: no measurement)' if opts.smoke else ''}\n")
    print(f"`{command}` on {started:%Y-%m-%d}, torch {library['torch']} (CUDA {library['cuda']}), "
          f"transformers {library['transformers']}, timm {library['timm']}, {os.cpu_count()} CPUs\n", flush=True)
    report = {
        "command": command,
        "date": started.isoformat(timespec="seconds"),
        "smoke": opts.smoke,
        "machine": machine(device),
        "versions": library,
        "complete": False,
        "total_seconds": 0.0,
        "measurements": {},
    }
    output = Path(opts.output)
    records = report["measurements"]
    write_report(output, report)  # an unwritable --output fails now, not after the measurements
    with tempfile.TemporaryDirectory() as workdir:
        setup = Setup(device=device, label=label, smoke=opts.smoke, workdir=Path(workdir))
        for name, title, budget_s, part in PARTS:
            if name in only:
                records[name] = run_part(title, budget_s, part, setup)
                report["total_seconds"] = sum(r["seconds"] for r in records.values())
                write_report(output, report)  # after every part: a run cut short keeps what it measured
                print(markdown_part(records[name]) + "\n", flush=True)
    report["complete"] = True
    write_report(output, report)
    print("### Time per part\n\n| part | device | status | seconds | budget (s) |\n|---|---|---|---|---|")
    for name, r in records.items():
        print(f"| {name} | {r['device']} | {r['status']} | {r['seconds']:.1f} | {r['budget_s']:g} |")
    print(f"| total | | | {report['total_seconds']:.1f} | {sum(r['budget_s'] for r in records.values()):g} |")
    print(f"\nResults: {output}")


if __name__ == "__main__":
    main()
