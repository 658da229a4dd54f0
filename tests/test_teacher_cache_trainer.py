"""DistillationTrainer with ``teacher_cache=True``: the same run as with the online teacher (every logged loss, the
final weights), the teacher run only on rows the cache does not hold yet (a second run of the seed never runs it),
the gradient-accumulation window's statistics from cached logits, the cache reused for the same teacher and created
anew for another, two processes sharing one, and the refusals.

``two_process_worker`` runs in each process of the one torchrun launch of two_process_jobs.py: it trains with and
without the cache and writes the losses and weights of both.
"""

from __future__ import annotations

import gc
import json
import logging

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.data import resolve_data_config

from ltkd_hf import DistillationConfig, DistillationTrainer
from ltkd_hf.data import InMemoryImages, collate_images
from ltkd_hf.models import create_student, unwrap_timm
from ltkd_hf.teacher_cache import FILLED_NAME, KEY_NAME, LOGITS_NAME, TeacherLogitCache

from tiny_setup import CLASS_COUNTS, NUM_CLASSES, SyntheticImages, make_config

CIFAR = resolve_data_config(model=timm.create_model("cifar_resnet8x4"))  # 32x32, padding-4 crop and flip
NAMES = [f"c{i}" for i in range(NUM_CLASSES)]
# The teacher reads another normalisation than the student's, so the cache is built through the input conversion.
TEACHER_CFG = dict(CIFAR, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def student():
    """A BatchNorm-free student (a sample's output does not depend on the rest of its batch)."""
    torch.manual_seed(0)
    return create_student("test_convnext", num_classes=NUM_CLASSES, label_names=NAMES, pretrained_cfg_overlay=CIFAR)


def teacher(seed: int = 1):
    """A small CIFAR ResNet (BatchNorm, in eval mode), confident and biased towards the head classes, so that
    LTKD's rebalancing changes the loss."""
    torch.manual_seed(seed)
    model = timm.create_model("cifar_resnet8x4", num_classes=NUM_CLASSES, planes=(8, 16, 32), stem_width=8,
                              pretrained_cfg_overlay=TEACHER_CFG)
    with torch.no_grad():
        model.train()(torch.randn(32, 3, 32, 32))  # BatchNorm statistics that are not the identity
        model.get_classifier().weight.mul_(10.0)
        model.get_classifier().bias.copy_(torch.linspace(3.0, -3.0, NUM_CLASSES))
    return model.eval()


def images(n: int) -> InMemoryImages:
    g = torch.Generator().manual_seed(3)
    pixels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return InMemoryImages(pixels, torch.arange(n) % NUM_CLASSES, train=True, class_names=NAMES)


def build(out: Path, loss: str, cache: bool, *, batch: int = 8, accumulation: int = 1, steps: int = 4,
          cache_dir: Path | None = None, teacher_model=None, n: int = 8, **overrides) -> DistillationTrainer:
    """The tiny setup's trainer: ``n`` in-memory images, device augmentation, the teacher's logits from the cache
    in ``cache_dir`` (default ``<out>/../cache``) when ``cache``."""
    config = make_config(out, max_steps=steps, per_device_train_batch_size=batch, per_device_eval_batch_size=256,
                         gradient_accumulation_steps=accumulation, learning_rate=0.1, device_augmentation=True,
                         distill_loss=loss, teacher_cache=cache, **overrides)
    return DistillationTrainer(
        model=student(), teacher_model=teacher_model if teacher_model is not None else teacher(), args=config,
        train_dataset=images(n), data_collator=collate_images, class_counts=CLASS_COUNTS,
        teacher_cache_dir=(cache_dir or out.parent / "cache") if cache else None,
    )


def fit(trainer: DistillationTrainer):
    """Train; return the logs of every step, the student's weights and the teacher's forward passes in
    ``train()``."""
    calls = []
    handle = unwrap_timm(trainer.teacher).register_forward_hook(lambda *_: calls.append(1))
    trainer.train()
    handle.remove()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]
    weights = {k: v.detach().clone() for k, v in unwrap_timm(trainer.model.student).state_dict().items()}
    return logs, weights, len(calls)


def train(out: Path, loss: str, cache: bool, **kwargs):
    """`build` then `fit`: (the trainer, its logs, weights and teacher forwards)."""
    trainer = build(out, loss, cache, **kwargs)
    return (trainer, *fit(trainer))


# The logged terms are float32 functions of O(1-10) logits; the cached logits come from batches of another size
# than training's, a few eps (1.2e-7) of those apart: 1e-4 relative, with a 1e-6 floor for the small terms (LTKD's
# cross-group term is ~1e-4).
TERMS = dict(rel=1e-4, abs=1e-6)


def assert_same_run(logs, weights, reference_logs, reference_weights, steps=4):
    assert len(logs) == len(reference_logs) == steps
    for got, expected in zip(logs, reference_logs):
        assert got["step"] == expected["step"]
        for key in ("loss", "ce", "distill", "kl", "cross_group", "within_group"):
            if key in expected:
                assert got[key] == pytest.approx(expected[key], **TERMS), (expected["step"], key)
    # four SGD steps at lr 0.1 from gradients that agree to float noise: far below the steps' own ~1e-2 changes
    for key, value in reference_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6, msg=key)


def filled(cache: Path) -> int:
    return int(np.load(cache / FILLED_NAME).sum())


def test_the_cached_run_is_the_online_run_for_every_logit_loss_and_the_cache_is_shared(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ltkd_hf")
    cache = tmp_path / "cache"
    _, kd_online, kd_weights, calls = train(tmp_path / "kd-online", "kd", False)
    assert calls == 4  # one teacher forward per training step
    caplog.clear()
    _, kd_cached, kd_cached_weights, calls = train(tmp_path / "kd-cached", "kd", True, cache_dir=cache)
    assert f"Creating the teacher-logit cache in {cache}" in caplog.text
    assert calls == 4  # the first run fills the cache: the teacher runs on each step's rows, as online
    assert np.load(cache / LOGITS_NAME, mmap_mode="r").shape == (8, 162, NUM_CLASSES)
    assert 24 < filled(cache) <= 32  # 4 steps x 8 images, a row drawn twice filled once
    assert_same_run(kd_cached, kd_cached_weights, kd_online, kd_weights)
    # the student changed: the runs agree on something that moved
    start = unwrap_timm(student()).state_dict()
    assert max((kd_weights[k] - start[k]).abs().max().item() for k in start) > 1e-3

    # another loss, same teacher, split and seed: the run draws the same rows, all in the cache: no teacher pass
    _, ltkd_online, ltkd_weights, _ = train(tmp_path / "ltkd-online", "ltkd", False)
    rows = filled(cache)
    caplog.clear()
    _, ltkd_cached, ltkd_cached_weights, calls = train(tmp_path / "ltkd-cached", "ltkd", True, cache_dir=cache)
    assert f"Reusing the teacher-logit cache in {cache}" in caplog.text and "Creating" not in caplog.text
    assert "32 of this process's 32 teacher rows read from it (100.0%)" in caplog.text
    assert calls == 0 and filled(cache) == rows
    assert_same_run(ltkd_cached, ltkd_cached_weights, ltkd_online, ltkd_weights)

    # The comparison has power: the same cache with each image's outcomes shifted by one (the logits of another
    # crop of the same image) gives a run far outside the tolerance.
    logits = np.load(cache / LOGITS_NAME)
    np.save(cache / LOGITS_NAME, np.roll(logits, 1, axis=1))
    _, shifted, _, calls = train(tmp_path / "kd-shifted", "kd", True, cache_dir=cache)
    assert calls == 0
    assert max(abs(a["distill"] - b["distill"]) / b["distill"] for a, b in zip(shifted, kd_online)) > 1e-2
    np.save(cache / LOGITS_NAME, logits)

    # a retrained teacher: the cache is created anew for it, and the run is that teacher's online run
    caplog.clear()
    _, other, other_weights, calls = train(tmp_path / "kd-other", "kd", True, cache_dir=cache,
                                           teacher_model=teacher(seed=2))
    assert "made for another teacher: creating it anew" in caplog.text and calls == 4 and filled(cache) == rows
    assert not np.allclose(np.load(cache / LOGITS_NAME), logits, atol=1e-3)
    _, other_online, other_online_weights, _ = train(tmp_path / "kd-other-online", "kd", False,
                                                     teacher_model=teacher(seed=2))
    assert_same_run(other, other_weights, other_online, other_online_weights)


def test_a_cache_filled_under_another_precision_is_made_anew(tmp_path, caplog):
    """The key named the teacher's weights, not the autocast its forward ran under: a run without --bf16 read the
    bf16 logits of an earlier run (its weights 0.1 away from its online run) and logged "same teacher"."""
    caplog.set_level(logging.INFO, logger="ltkd_hf")
    cache = tmp_path / "cache"
    train(tmp_path / "bf16", "kd", True, cache_dir=cache, steps=1, bf16=True)
    assert json.loads((cache / KEY_NAME).read_text())["precision"] == "bf16"
    caplog.clear()
    _, _, _, calls = train(tmp_path / "fp32", "kd", True, cache_dir=cache, steps=1)
    assert "made for another precision: creating it anew" in caplog.text and calls == 1
    assert json.loads((cache / KEY_NAME).read_text())["precision"] == "no"


def test_a_reports_teacher_row_is_read_from_the_cache_after_the_first_report(tmp_path):
    """The held-out split is not augmented: the teacher's logits on it are the same in every report of a table's
    cells. The first cached report fills them (in a subfolder of the cache), the next reads them without a teacher
    forward, and both teacher rows are the online report's."""
    g = torch.Generator().manual_seed(5)
    test_split = InMemoryImages(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g),
                                torch.arange(12) % NUM_CLASSES, train=False, class_names=NAMES)
    reference = build(tmp_path / "online", "kd", False, steps=1)
    reference.train()
    expected = reference.write_report(eval_dataset=test_split)["teacher"]
    forwards = []
    for name in ("first", "second"):
        trainer = build(tmp_path / name, "kd", True, steps=1)
        trainer.train()
        calls = []
        handle = unwrap_timm(trainer.teacher).register_forward_hook(lambda *_: calls.append(1))
        row = trainer.write_report(eval_dataset=test_split)["teacher"]
        handle.remove()
        forwards.append(len(calls))
        assert row["accuracy"] == expected["accuracy"] and row["per_class"] == expected["per_class"]
        # means over 12 images of float32 softmax probabilities (O(1)) from batches of another size: a few eps each
        np.testing.assert_allclose(row["group_mass"], expected["group_mass"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row["ece"], expected["ece"], rtol=1e-5, atol=1e-6)
    assert forwards[0] > 0 and forwards[1] == 0
    held_out = list((tmp_path / "cache").glob("evaluation-*"))
    assert len(held_out) == 1 and np.load(held_out[0] / FILLED_NAME).sum() == 12


def test_a_gradient_accumulation_window_rebalances_as_one_batch_with_the_cache(tmp_path):
    """16 x GA 1 == 8 x GA 2 with cached logits: LTKD's group sums cover the whole window, summed from the cached
    logits of its micro-batches, which are the online teacher's on the micro-batches' augmented inputs."""
    seen = []

    def record(module, args, kwargs):
        seen.append({k: kwargs[k].detach().clone() for k in ("pixel_values", "teacher_logits", "batch_statistics")})

    runs = {}
    for name, batch, accumulation in (("full", 16, 1), ("accumulated", 8, 2)):
        trainer = build(tmp_path / name, "ltkd", True, batch=batch, accumulation=accumulation, steps=2, n=16)
        if name == "accumulated":
            trainer.model.register_forward_pre_hook(record, with_kwargs=True)
        runs[name] = fit(trainer)
    logs, weights, calls = runs["accumulated"]
    assert calls == 0  # the full-batch run filled the cache with the rows the accumulated one draws
    assert_same_run(logs, weights, *runs["full"][:2], steps=2)

    # Independently: the window's statistics are LTKD's group sums of the online teacher's logits on both
    # micro-batches' augmented inputs, and differ from either micro-batch's own (the check has power).
    assert len(seen) == 4  # 2 steps x 2 micro-batches
    online_teacher, loss = teacher(), trainer.loss_fn
    for first, second in (seen[0:2], seen[2:4]):
        with torch.no_grad():
            online = [online_teacher(trainer.teacher_input_transform(m["pixel_values"])) for m in (first, second)]
        for micro, logits in zip((first, second), online):
            torch.testing.assert_close(micro["teacher_logits"], logits, rtol=1e-5, atol=1e-5)  # logits of O(10)
        window = loss.batch_statistics(torch.cat(online))
        # sums of 16 softmax probabilities: float32 rounding of O(1-10) values
        torch.testing.assert_close(first["batch_statistics"], window, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(second["batch_statistics"], window, rtol=1e-5, atol=1e-6)
        assert (loss.batch_statistics(online[0]) * 2 - window).abs().max() > 0.1


def test_what_the_cache_cannot_serve_is_refused_naming_the_fix(tmp_path):
    for loss, match in (("ce", r"--teacher_cache true: --distill_loss ce .* no teacher runs"),
                        ("reviewkd", r"--teacher_cache true: --distill_loss reviewkd reads the teacher's intermediate "
                                     r"features.*\(bkd, dist, dkd, kd, ltkd\)")):
        with pytest.raises(ValueError, match=match):
            DistillationConfig(output_dir=str(tmp_path), teacher_cache=True, distill_loss=loss, use_cpu=True)
    kwargs = dict(model=student(), teacher_model=teacher(), class_counts=CLASS_COUNTS)
    with pytest.raises(ValueError, match=r"teacher_cache=True .* needs device_augmentation=True and a train_dataset "
                                         r"of uint8 images .*got device_augmentation=False and a SyntheticImages.*"
                                         r"--in_memory_data true"):
        DistillationTrainer(args=make_config(tmp_path, teacher_cache=True), train_dataset=SyntheticImages(8), **kwargs)
    with pytest.raises(ValueError, match=r"teacher_cache_dir='.*' is given but teacher_cache is off"):
        DistillationTrainer(args=make_config(tmp_path, device_augmentation=True), train_dataset=images(8),
                            data_collator=collate_images, teacher_cache_dir=tmp_path / "cache", **kwargs)
    # a student whose training transform is the random-resized crop (inputs above 64 px): no finite outcomes
    torch.manual_seed(0)
    large = create_student("test_convnext", num_classes=NUM_CLASSES, label_names=NAMES)  # 160 px
    data = InMemoryImages(torch.zeros(2, 3, 160, 160, dtype=torch.uint8), [0, 1], train=True, class_names=NAMES)
    with pytest.raises(ValueError, match=r"random-resized crop .* infinitely many outcomes.*--teacher_cache false"):
        DistillationTrainer(model=large, teacher_model=teacher(), args=make_config(tmp_path, teacher_cache=True,
                            device_augmentation=True), train_dataset=data, class_counts=CLASS_COUNTS)
    # a cache folder no run could share (several machines, or a file: check_cache_folder) is refused when built
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match=r"in the folder .*a-file, which is a file; move or remove that file"):
        build(tmp_path / "file", "kd", True, steps=1, cache_dir=tmp_path / "a-file")
    assert not (tmp_path / "cache").exists()
    # batches that lost their rows (a collator of its own) are refused at the first step, naming collate_images
    trainer = build(tmp_path / "rows", "kd", True, steps=1)
    trainer.data_collator = lambda examples: {k: v for k, v in collate_images(examples).items() if k != "index"}
    with pytest.raises(ValueError, match=r"carries no 'index' .*data.collate_images"):
        trainer.train()


def test_two_processes_share_one_cache_built_by_the_main_process(two_processes):
    """torchrun, 2 CPU processes (gloo): process 0 creates the cache while process 1 waits, then both fill it with
    their own rows; the run (LTKD, its group sums all-reduced) is the online one, and a second run reads every row."""
    folder = two_processes.root / "teacher_cache"
    ranks = [json.loads((folder / f"result.rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:  # a teacher forward per step, online and while filling; none when the rows are there
        assert (rank["calls"]["online"], rank["calls"]["cached"], rank["calls"]["again"]) == (2, 2, 0)
    assert two_processes.stderr.count("Creating the teacher-logit cache") == 1
    assert np.load(folder / "cache" / FILLED_NAME).sum() == 16  # 2 steps x 2 processes x 4 images
    for rank in ranks:
        online = {k: torch.tensor(v) for k, v in rank["weights"]["online"].items()}
        for name in ("cached", "again"):
            cached = {k: torch.tensor(v) for k, v in rank["weights"][name].items()}
            assert_same_run(rank["logs"][name], cached, rank["logs"]["online"], online, steps=2)


def two_process_worker(out: Path, result: Path) -> None:
    """Train online, then twice with the cache (2 steps of LTKD, 4 images per process); write this process's logs,
    weights and teacher forwards to ``<result>.rank<i>.json``. Run in each process of a torchrun launch by
    two_process_jobs.py."""
    logging.basicConfig(level=logging.INFO)
    written: dict = {"logs": {}, "weights": {}, "calls": {}}
    for name, cache in (("online", False), ("cached", True), ("again", True)):
        trainer = build(out / name, "ltkd", cache, batch=4, steps=2, n=16, cache_dir=out / "cache",
                        ddp_backend="gloo")
        logs, weights, calls = fit(trainer)
        written["logs"][name], written["calls"][name] = logs, calls
        written["weights"][name] = {k: v.tolist() for k, v in weights.items()}
        rank = trainer.args.process_index
        trainer.accelerator.wait_for_everyone()
        del trainer  # the DDP model (its gloo reducer) goes while the process group is alive
        gc.collect()
    Path(f"{result}.rank{rank}.json").write_text(json.dumps(written))


def test_a_process_that_finds_the_cache_replaced_by_another_run_makes_its_own(tmp_path, monkeypatch):
    """A process other than the main one that found the main process's cache replaced by another run's key (two runs
    of other splits from one teacher) stopped the run, blaming the folder's permissions."""
    trainer = build(tmp_path / "out", "kd", True)
    mine = trainer.open_teacher_cache().key  # the main process created it
    TeacherLogitCache.create(trainer.teacher_cache_dir, {**mine, "images": "another split"}, num_classes=NUM_CLASSES)
    monkeypatch.setattr(DistillationConfig, "should_save", property(lambda self: False))  # not the main process
    cache = trainer.open_teacher_cache()
    assert cache.key == mine and cache.filled_fraction() == 0
    assert json.loads((trainer.teacher_cache_dir / KEY_NAME).read_text()) == mine
