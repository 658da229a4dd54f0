"""Forward + backward time of LTKD against KD on logits, side by side in one run.

    python3 benchmarks/loss_speed.py [--device cpu|cuda] [--batch 256] [--repeats 50] [--threads N] [--launches]
                                     [--classes 100 1000] [--groups 3 10 100] [--compile inductor]
    python3 benchmarks/loss_speed.py --features [--batch 64] [--repeats 3] [--pair resnet32x4-resnet8x4]

For each C in {100, 1000} and K in {3, 10, 100, C}, times (best of ``--repeats``, measurements of the
three losses interleaved so that load on the machine hits them alike):
  * KD: ``ltkd_hf.losses.kd_loss``;
  * LTKD: the ``create_loss("ltkd", ...)`` module the trainer uses (groups validated once);
  * naive: a straightforward vectorised autograd LTKD (one-hot C x K matmuls, probabilities, logs of
    ratios), kept here for comparison only.
Prints a Markdown table with the ratios to KD. With ``--launches``, also counts what one forward + backward of
each loss dispatches (``torch.profiler``): top-level ATen operator calls, and on CUDA the kernels run on the
device; where the times are launch-bound (small C, GPU), these counts are what the ratios follow. With
``--compile BACKEND``, KD and LTKD are also timed through ``torch.compile(backend=BACKEND)`` (the loss's forward
compiled, its backward compiled with it by AOTAutograd), as the trainer runs them under ``torch_compile``: fused,
each launches a few kernels. ``--classes`` and ``--groups`` restrict C and K (each compiled point compiles both
losses anew).

With ``--features``, for the paper's seven CIFAR-100 pairs (32x32 inputs, 100 classes), times instead
the loss alone on features captured once from the real models (forward + backward into the student's
features and the ABFs): KD on the logits, ReviewKD (``create_loss("reviewkd", student=, teacher=)``) and
CAT-KD (``create_loss("catkd")``), next to one student step (forward + CE backward) without and with
``capture_features`` hooks, for scale. ``--pair`` (repeatable) restricts the pairs.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

import timm
import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ltkd_hf import ClassGroups
from ltkd_hf.losses import capture_features, create_loss, kd_loss
from ltkd_hf.models import CIFAR_PAIRS
from devices import add_device_argument, check_device


def naive_ltkd(student_logits, teacher_logits, one_hot, temperature=4.0, alpha=6.0, beta=6.0):
    """The obvious vectorised LTKD, for comparison only: group masses by a one-hot matmul."""
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    b_s, b_t = p_s @ one_hot, p_t @ one_hot
    sums = b_t.sum(0)
    scaled = b_t * (sums.mean() / sums)
    target = scaled / scaled.sum(1, keepdim=True)
    cross = (target * (target.log() - b_s.log())).sum(1).mean()
    q_s, q_t = p_s / (b_s @ one_hot.t()), p_t / (b_t @ one_hot.t())
    within = (q_t * (q_t.log() - q_s.log())).sum(1).mean()
    return temperature**2 * (alpha * cross + beta * within)


def long_tailed_counts(num_classes: int, imbalance: float = 100.0) -> list[int]:
    return [int(500 * imbalance ** (-c / (num_classes - 1))) + 1 for c in range(num_classes)]


def time_step(step, student, device: torch.device) -> float:
    if student is not None:
        student.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def count_launches(step, device: torch.device) -> dict[str, int]:
    """What one call of ``step`` dispatches: ``ops``, the ATen operator calls not made from inside another one
    (each launches at most a few kernels; views launch none), and on CUDA ``kernels``, the device-side events
    (kernels, memsets, copies) the profiler records."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.events()
    aten = [e for e in events if e.name.startswith("aten::")]
    counts = {"ops": sum(1 for e in aten if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))}
    if device.type == "cuda":
        counts["kernels"] = sum(1 for e in events if e.device_type == DeviceType.CUDA)
    return counts


def backward_steps(losses: dict[str, Callable], student, teacher, backend: str | None = None) -> dict[str, Callable]:
    """One forward + backward of each of ``losses`` (``(student, teacher) -> loss``); with ``backend``, through
    ``torch.compile`` (compiled at the first call) and named ``<name>_compiled``."""
    if backend is None:
        return {name: (lambda fn=fn: fn(student, teacher).backward()) for name, fn in losses.items()}
    torch._dynamo.reset()  # every point compiles its own graphs, with no recompile limit carried over
    compiled = {name: torch.compile(fn, backend=backend, dynamic=False) for name, fn in losses.items()}
    return {f"{name}_compiled": step for name, step in backward_steps(compiled, student, teacher).items()}


def run(
    device: torch.device,
    batch: int,
    repeats: int,
    launches: bool = False,
    compile_backend: str | None = None,
    classes: Sequence[int] = (100, 1000),
    groups: Sequence[int] | None = None,
) -> list[dict[str, float]]:
    """The table's rows: for each C in ``classes``, each K in ``groups`` below C (default 3, 10, 100 and C itself)."""
    rows = []
    for num_classes in classes:
        chosen = {3, 10, 100, num_classes} if groups is None else {k for k in groups if k <= num_classes}
        for num_groups in sorted(chosen):
            class_groups = ClassGroups.from_counts(long_tailed_counts(num_classes), num_groups)
            gen = torch.Generator().manual_seed(0)
            student = torch.randn(batch, num_classes, generator=gen).mul_(3).to(device).requires_grad_()
            teacher = torch.randn(batch, num_classes, generator=gen).mul_(3).to(device)
            one_hot = F.one_hot(class_groups.index(), num_groups).float().to(device)
            ltkd = create_loss("ltkd", groups=class_groups).to(device)
            losses = {"kd": lambda s, t: kd_loss(s, t)["loss"], "ltkd": lambda s, t: ltkd(s, t)["loss"]}
            steps = backward_steps({**losses, "naive": lambda s, t: naive_ltkd(s, t, one_hot)}, student, teacher)
            if compile_backend:
                steps.update(backward_steps(losses, student, teacher, compile_backend))
            best = {name: float("inf") for name in steps}
            for _ in range(5):  # warm-up
                for step in steps.values():
                    time_step(step, student, device)
            for _ in range(repeats):
                for name, step in steps.items():
                    best[name] = min(best[name], time_step(step, student, device))
            row = {"C": num_classes, "K": num_groups, **{n: 1e3 * t for n, t in best.items()}}
            if launches:
                for name, step in steps.items():
                    student.grad = None
                    row.update({f"{name}_{k}": v for k, v in count_launches(step, device).items()})
            rows.append(row)
    return rows


def _detached(features: dict, leaf: bool) -> dict:
    """Captured features cut from their models' graphs (as leaves needing grad for the student)."""

    def cut(t):
        return t.detach().requires_grad_(leaf) if isinstance(t, torch.Tensor) else t

    return {k: [cut(t) for t in v] if isinstance(v, list) else cut(v) for k, v in features.items()}


def _timed_best(steps: dict, device: torch.device, repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in steps}
    for step in steps.values():  # warm-up
        time_step(step, None, device)
    for _ in range(repeats):
        for name, step in steps.items():
            best[name] = min(best[name], time_step(step, None, device))
    return {n: 1e3 * t for n, t in best.items()}


def pair_name(teacher_name: str, student_name: str) -> str:
    """A CIFAR pair's --pair name: the architectures without their ``cifar_`` prefix."""
    return f"{teacher_name.removeprefix('cifar_')}-{student_name.removeprefix('cifar_')}"


def run_features(
    device: torch.device, batch: int, repeats: int, pairs: list[str] | None = None
) -> list[dict[str, object]]:
    """The feature-loss times of each CIFAR pair (``pairs``: their `pair_name`s; default all)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, 100, (batch,), generator=gen).to(device)
    for teacher_name, student_name in CIFAR_PAIRS:
        if pairs and pair_name(teacher_name, student_name) not in pairs:
            continue
        student = timm.create_model(student_name, num_classes=100).to(device).train()
        teacher = timm.create_model(teacher_name, num_classes=100).to(device).eval().requires_grad_(False)
        review = create_loss("reviewkd", student=student, teacher=teacher).to(device)
        cat = create_loss("catkd")
        with capture_features(student) as captured:
            logits = student(x)
        with torch.no_grad(), capture_features(teacher, preact=True) as teacher_captured:
            teacher_logits = teacher(x)
        s_feats, t_feats = _detached(captured, leaf=True), _detached(teacher_captured, leaf=False)
        s_logits = logits.detach().requires_grad_()

        def student_step(hooked: bool) -> None:
            student.zero_grad(set_to_none=True)
            if hooked:
                with capture_features(student):
                    out = student(x)
            else:
                out = student(x)
            F.cross_entropy(out, labels).backward()

        steps = {
            "student": lambda: student_step(False),
            "student_hooked": lambda: student_step(True),
            "kd": lambda: kd_loss(s_logits, teacher_logits)["loss"].backward(),
            "reviewkd": lambda: review(s_logits, teacher_logits, student_features=s_feats,
                                       teacher_features=t_feats)["loss"].backward(),
            "catkd": lambda: cat(s_logits, teacher_logits, student_features=s_feats,
                                 teacher_features=t_feats)["loss"].backward(),
        }
        times = _timed_best(steps, device, repeats)
        rows.append({"pair": f"{teacher_name[6:]} -> {student_name[6:]}", **times})
    return rows


def markdown_features(rows: list[dict[str, object]]) -> str:
    lines = [
        "| teacher -> student | student step (ms) | + capture hooks | KD (ms) | ReviewKD (ms) | ReviewKD / KD "
        "| ReviewKD / student step | CAT-KD (ms) | CAT-KD / KD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pair']} | {r['student']:.1f} | {r['student_hooked'] / r['student']:.2f}x | {r['kd']:.3f} "
            f"| {r['reviewkd']:.1f} | {r['reviewkd'] / r['kd']:.0f}x | {r['reviewkd'] / r['student']:.2f}x "
            f"| {r['catkd']:.3f} | {r['catkd'] / r['kd']:.1f}x |"
        )
    return "\n".join(lines)


def markdown(rows: list[dict[str, float]]) -> str:
    compiled = "kd_compiled" in rows[0]  # the --compile columns
    losses = {"kd": "KD", "ltkd": "LTKD", "naive": "naive LTKD"}
    losses.update({"kd_compiled": "KD compiled", "ltkd_compiled": "LTKD compiled"} if compiled else {})
    ratios = {"LTKD / KD": ("ltkd", "kd"), "naive / KD": ("naive", "kd")}
    if compiled:
        ratios.update({"LTKD compiled / KD compiled": ("ltkd_compiled", "kd_compiled"),
                       "LTKD compiled / KD": ("ltkd_compiled", "kd")})
    counted = [k for k in ("ops", "kernels") if f"kd_{k}" in rows[0]]  # the --launches columns
    header = ["C", "K", *(f"{label} (ms)" for label in losses.values()), *ratios]
    header += [f"{label} {k}" for k in counted for label in losses.values()]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for r in rows:
        cells = [r["C"], r["K"], *(f"{r[name]:.3f}" for name in losses)]
        cells += [f"{r[a] / r[b]:.2f}x" for a, b in ratios.values()]
        cells += [r[f"{name}_{k}"] for k in counted for name in losses]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark (also parsed by gpu_suite.py, so its commands are exact)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_device_argument(parser)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--launches", action="store_true", help="also count the operators and CUDA kernels of each loss"
    )
    parser.add_argument(
        "--compile",
        metavar="BACKEND",
        help="also time KD and LTKD through torch.compile with this backend (inductor, aot_eager, ...)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        nargs="+",
        choices=[100, 1000],
        help="the numbers of classes C to measure (default 100 1000)",
    )
    parser.add_argument(
        "--groups",
        type=int,
        nargs="+",
        choices=[3, 10, 100, 1000],
        help="the numbers of groups K to measure, each at the C it does not exceed (default 3 10 100 and K = C)",
    )
    parser.add_argument(
        "--features", action="store_true", help="time the feature baselines (ReviewKD, CAT-KD) against KD instead"
    )
    parser.add_argument(
        "--pair",
        action="append",
        choices=[pair_name(*pair) for pair in CIFAR_PAIRS],
        help="with --features: time this CIFAR pair (repeatable; default all seven)",
    )
    return parser


def check_options(opts: argparse.Namespace) -> None:
    """Refuse a flag that the chosen table would ignore."""
    if opts.features:
        given = [flag for flag, value in (("--launches", opts.launches), ("--compile", opts.compile),
                                          ("--classes", opts.classes), ("--groups", opts.groups)) if value]
        if given:
            raise ValueError(f"{' '.join(given)}: the logit losses' table only; drop it with --features")
    elif opts.pair:
        raise ValueError("--pair: chooses the pairs of the --features table; add --features or drop --pair")


def measure(opts: argparse.Namespace) -> list[dict[str, object]]:
    """The rows of the table that ``opts`` asks for: the logit losses, or with ``opts.features`` the feature ones."""
    check_options(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    if opts.features:
        return run_features(device, opts.batch, opts.repeats, opts.pair)
    return run(device, opts.batch, opts.repeats, opts.launches, opts.compile, opts.classes or (100, 1000), opts.groups)


def main() -> None:
    parser = build_parser()
    opts = parser.parse_args()
    check_device(parser, opts.device)
    try:
        check_options(opts)
    except ValueError as err:
        parser.error(str(err))
    rows = measure(opts)
    device = torch.device(opts.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    backend = f", compiled with torch.compile backend {opts.compile}" if opts.compile else ""
    print(f"forward+backward, batch {opts.batch}, float32, best of {opts.repeats}, {name}, torch {torch.__version__}"
          f"{backend}\n")
    print(markdown_features(rows) if opts.features else markdown(rows))


if __name__ == "__main__":
    main()
