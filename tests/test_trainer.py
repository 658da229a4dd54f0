"""DistillationTrainer: GA correctness, frozen teacher, logging, resume after SIGKILL, torchrun, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ltkd_hf import ClassGroups, DistillationConfig
from ltkd_hf.losses import ltkd_loss
from ltkd_hf.models import unwrap_timm
from ltkd_hf.trainer_inputs import evaluation_metrics

from tiny_setup import CLASS_COUNTS, NUM_CLASSES, SyntheticImages, make_config, make_student, make_teacher, make_trainer
from trainer_worker import biased_teacher, first_step, pretrained_student

pytestmark = pytest.mark.heavy  # scheduled first (conftest.py)

HERE = Path(__file__).parent
WORKER = HERE / "trainer_worker.py"


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def student_init(request, kind: str) -> list:
    """The worker arguments for the student `kind`: the default one, or the ViT started from vit_checkpoint."""
    return [] if kind == "default" else ["--student-init", request.getfixturevalue("vit_checkpoint")]


def test_gradient_accumulation_matches_full_batch(tmp_path):
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        student = make_student()
        before = weights(student)
        config = make_config(
            tmp_path / f"b{batch}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            distill_loss="kd",
            learning_rate=0.5,
        )
        make_trainer(config, model=student).train()
        results.append(weights(student))
    assert any(not torch.equal(before[k], results[0][k]) for k in before), "the step must change the student"
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-6, msg=k)


class FlippedImages(SyntheticImages):
    """Each image flipped at random on reading, drawn from torch's generator as torchvision's transforms draw."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        if torch.rand(()) < 0.5:
            item["pixel_values"] = item["pixel_values"].flip(-1)
        return item


def test_evaluating_during_training_changes_no_weight(tmp_path):
    """Each evaluation's data loader drew its base seed from torch's generator, so every later augmentation draw
    moved: --eval_strategy epoch trained another model than --eval_strategy no."""
    trained = []
    for strategy in ("no", "epoch"):
        student = make_student()
        config = make_config(tmp_path / strategy, max_steps=-1, num_train_epochs=3, eval_strategy=strategy,
                             distill_loss="kd")
        make_trainer(config, model=student, train_dataset=FlippedImages(8), eval_dataset=SyntheticImages(4)).train()
        trained.append(weights(student))
    for name, tensor in trained[0].items():
        assert torch.equal(tensor, trained[1][name]), name


def test_persistent_workers_train_another_model_and_are_recorded(tmp_path):
    """Persistent workers keep their random state across epochs (new ones are seeded anew each epoch), so the
    augmentation draws and the weights differ; the setting was recorded as changing no weight, and a folder
    trained with it was taken for one trained without."""
    from ltkd_hf.provenance import run_settings

    trained, settings = [], []
    for persistent in (False, True):
        student = make_student()
        config = make_config(tmp_path / str(persistent), max_steps=-1, num_train_epochs=2, distill_loss="kd",
                             dataloader_num_workers=1, dataloader_persistent_workers=persistent)
        trainer = make_trainer(config, model=student, train_dataset=FlippedImages(8))
        trainer.train()
        trained.append(weights(student))
        settings.append(run_settings(config, trainer.split_info, model=student, teacher=trainer.teacher_name))
    assert any(not torch.equal(tensor, trained[1][name]) for name, tensor in trained[0].items())
    assert settings[0]["schedule"]["dataloader_persistent_workers"] is False
    assert settings[1]["schedule"]["dataloader_persistent_workers"] is True


def test_teacher_is_frozen_untouched_and_never_checkpointed(tmp_path):
    teacher = make_teacher()
    teacher.train()  # timm returns train-mode models: the trainer must pin eval mode itself
    teacher_before = weights(teacher)
    student = make_student()
    config = make_config(tmp_path, max_steps=3, save_strategy="steps", save_steps=2)
    trainer = make_trainer(config, model=student, teacher_model=teacher, train_dataset=SyntheticImages(24))
    trainer.train()
    for k, v in teacher.state_dict().items():  # weights and BatchNorm running statistics, bit for bit
        assert torch.equal(v, teacher_before[k]), k
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized and not optimized & {id(p) for p in teacher.parameters()}
    checkpoint = tmp_path / "checkpoint-2"
    tensors = load_file(checkpoint / "model.safetensors")
    assert set(tensors) == set(unwrap_timm(student).state_dict())  # the canonical folder: timm key names
    # Randomly initialised teacher tensors (constant ones, like BatchNorm's initial weights, match anything).
    teacher_values = [
        v for v in teacher.state_dict().values() if v.is_floating_point() and v.numel() > 16 and v.std() > 0
    ]
    assert teacher_values
    assert not any(t.shape == v.shape and torch.equal(t, v) for t in tensors.values() for v in teacher_values)


def test_logs_every_component_and_group_metrics(tmp_path):
    student, teacher = make_student(), make_teacher()
    train, evaluation = SyntheticImages(8), SyntheticImages(12, seed=5)
    config = make_config(
        tmp_path,
        max_steps=1,
        learning_rate=0.0,
        eval_strategy="steps",
        eval_steps=1,
        ce_weight=0.5,
    )
    trainer = make_trainer(config, model=student, teacher_model=teacher, train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    train_log = next(h for h in trainer.state.log_history if "cross_group" in h)
    eval_log = next(h for h in trainer.state.log_history if "eval_accuracy" in h)

    # Independent computation on the whole (single) batch: lr = 0 leaves the student as it was.
    student.eval()
    teacher.eval()
    with torch.no_grad():
        s = student(pixel_values=train.images).logits
        t = teacher(train.images)
    groups = ClassGroups.from_counts(CLASS_COUNTS, 3)
    ref = ltkd_loss(s, t, groups.index())
    ce = F.cross_entropy(s, train.labels).item()
    # float32 terms of O(1-10) logits computed two ways: a few eps (1.2e-7) of those apart however small the term;
    # distill and loss carry T^2 * 6 = 96 times the terms' rounding
    assert train_log["ce"] == pytest.approx(ce, rel=1e-4, abs=1e-6)
    assert train_log["cross_group"] == pytest.approx(ref["cross_group"].item(), rel=1e-4, abs=1e-6)
    assert train_log["within_group"] == pytest.approx(ref["within_group"].item(), rel=1e-4, abs=1e-6)
    assert train_log["distill"] == pytest.approx(ref["loss"].item(), rel=1e-4, abs=1e-5)
    assert train_log["loss"] == pytest.approx(0.5 * ce + ref["loss"].item(), rel=1e-4, abs=1e-5)

    with torch.no_grad():
        predictions = student(pixel_values=evaluation.images).logits.argmax(-1)
    correct = (predictions == evaluation.labels).tolist()
    assert eval_log["eval_accuracy"] == pytest.approx(sum(correct) / len(correct))
    for g, name in enumerate(groups.names):
        rows = [i for i, y in enumerate(evaluation.labels.tolist()) if groups.class_to_group[y] == g]
        assert eval_log[f"eval_accuracy_{name}"] == pytest.approx(sum(correct[i] for i in rows) / len(rows))
    eval_ce = F.cross_entropy(student(pixel_values=evaluation.images).logits, evaluation.labels).item()
    assert eval_log["eval_loss"] == pytest.approx(eval_ce, rel=1e-4, abs=1e-6)
    assert eval_log["eval_ce"] == pytest.approx(eval_ce, rel=1e-4, abs=1e-6)


def test_eval_ce_is_the_mean_over_images_as_eval_loss_is(tmp_path):
    """The eval loss terms were means over batches: with a smaller last batch (4, 4, 2 images) eval_ce was another
    number than eval_loss, which Trainer takes over images."""
    student, evaluation = make_student(), SyntheticImages(10, seed=3)
    trainer = make_trainer(make_config(tmp_path, per_device_eval_batch_size=4), model=student, eval_dataset=evaluation)
    metrics = trainer.evaluate()
    with torch.no_grad():
        per_image = F.cross_entropy(student.eval()(pixel_values=evaluation.images).logits, evaluation.labels,
                                    reduction="none")
    by_batch = torch.stack([per_image[i:i + 4].mean() for i in (0, 4, 8)]).mean().item()
    assert abs(per_image.mean().item() - by_batch) > 5e-4  # the two means differ on this data, beyond the tolerance
    assert metrics["eval_loss"] == pytest.approx(per_image.mean().item(), rel=1e-5, abs=1e-6)
    assert metrics["eval_ce"] == pytest.approx(per_image.mean().item(), rel=1e-5, abs=1e-6)


def test_warmup_ramps_distillation_linearly(tmp_path):
    config = make_config(tmp_path, warmup_epochs=4.0, max_steps=10)  # 8 images in batches of 8: 10 epochs
    trainer = make_trainer(config)
    for epoch, expected in ((0.0, 0.0), (1.0, 0.25), (3.0, 0.75), (9.0, 1.0)):
        trainer.state.epoch = epoch
        assert trainer.distill_ramp() == expected


def test_a_warm_up_as_long_as_the_run_is_refused_by_the_trainer(tmp_path):
    """Only the recipes refused it: a library run ended with the distillation term below full weight throughout."""
    # 8 images in batches of 8: one optimizer step an epoch, so max_steps 2 is 2 epochs
    with pytest.raises(ValueError, match=r"^--warmup_epochs 2 is not shorter than the run \(2 epochs, 2 steps\)"):
        make_trainer(make_config(tmp_path, warmup_epochs=2.0))
    trainer = make_trainer(make_config(tmp_path, warmup_epochs=1.5))
    trainer.state.epoch = 2.0  # the run's end: at full weight
    assert trainer.distill_ramp() == 1.0


def test_a_best_metric_the_evaluation_does_not_report_is_refused_before_training(tmp_path):
    """A misspelt metric_for_best_model trained until the first evaluation, then stopped with Trainer's KeyError."""
    def config(metric, **values):
        return make_config(tmp_path, eval_strategy="steps", eval_steps=1, metric_for_best_model=metric, **values)

    with pytest.raises(ValueError, match=r"^--metric_for_best_model acuracy: the evaluation reports \['loss', 'ce', "
                                         r"'accuracy', 'accuracy_head', 'accuracy_medium', 'accuracy_tail'\]"):
        make_trainer(config("acuracy"), eval_dataset=SyntheticImages(6, seed=1))
    # every name it accepts is one the evaluation reports: training chooses by it (the lower loss, not the last)
    trainer = make_trainer(config("eval_loss"), eval_dataset=SyntheticImages(6, seed=1))
    trainer.train()
    evaluations = [log["eval_loss"] for log in trainer.state.log_history if "eval_loss" in log]
    assert len(evaluations) == 2 and evaluations[0] != evaluations[1]
    assert trainer.state.best_metric == min(evaluations)
    reported = {k.removeprefix("eval_") for k in trainer.evaluate()} - {"runtime", "samples_per_second",
                                                                        "steps_per_second", "epoch"}
    assert reported == set(evaluation_metrics(trainer.groups.names))
    # the caller's own metrics are the caller's to name
    make_trainer(config("f1"), eval_dataset=SyntheticImages(6, seed=1), compute_metrics=lambda p: {"f1": 0.0})


def test_a_learning_rate_decay_after_the_runs_end_is_refused(tmp_path):
    """lr_decay_epochs [20, 25] on a 10-epoch run trained at the full learning rate throughout, the folder and card
    recording a step decay that never came. 8 images in batches of 8: one optimizer step an epoch."""
    def epochs(**values):  # the step decay replaces Trainer's schedule, whose type stays at its default
        return make_config(tmp_path, max_steps=-1, num_train_epochs=2, lr_scheduler_type="linear", **values)

    with pytest.raises(ValueError, match=r"^--lr_decay_epochs \[1.0, 2.0\]: \[2.0\] come at or after the end of the "
                                         r"run \(2 epochs\), so the learning rate would never be decayed there; pass "
                                         r"decay epochs below 2, train longer, or pass --lr_decay_epochs none\.$"):
        make_trainer(epochs(lr_decay_epochs=[1.0, 2.0]))
    trainer = make_trainer(epochs(lr_decay_epochs=[1.0]))
    trainer.train()
    assert [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h] == pytest.approx(
        [0.05, 0.005])  # the decay within the run still comes, at the end of epoch 1


class _OtherKeys(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"image": torch.zeros(3, 32, 32), "label": torch.tensor(i % 6)}


def test_a_dataset_of_other_keys_is_named_not_a_key_error(tmp_path):
    """A torch dataset yielding {"image", "label"} failed with KeyError: 'pixel_values' deep in the first step."""
    trainer = make_trainer(make_config(tmp_path), train_dataset=_OtherKeys())
    # (transformers' default collator has renamed label to labels)
    with pytest.raises(ValueError, match=r"A training batch holds \['image', 'labels'\] but no \['pixel_values'\]: "
                                         r"DistillationTrainer reads 'pixel_values'"):
        trainer.train()


def run_worker(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread each is fastest, and never oversubscribes
    proc = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


STUDENTS = pytest.mark.parametrize("student", ["default", "pretrained-vit"])


@STUDENTS
def test_resume_after_sigkill_reaches_the_same_weights(tmp_path, request, student):
    """default: a test_resnet student (BatchNorm buffers must resume too); pretrained-vit: a ViT started from a
    checkpoint folder, whose 32-px batches the trainer resizes for the 160-px teacher."""
    init = student_init(request, student)
    killed = run_worker(
        "run", tmp_path / "killed", tmp_path / "unused.safetensors", "--kill-at-save", 4, *init, check=False
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "killed" / "checkpoint-4").is_dir() and not (tmp_path / "unused.safetensors").exists()
    # the resumed run, then the same run from scratch, in one fresh process
    run_worker("run", tmp_path / "killed", tmp_path / "resumed.safetensors", "--resume",
               "--then-straight", tmp_path / "straight", tmp_path / "straight.safetensors", *init)
    straight, resumed = load_file(tmp_path / "straight.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert set(straight) == set(resumed)
    if student == "pretrained-vit":  # the run trained the ViT that started from the folder
        start = load_file(request.getfixturevalue("vit_checkpoint") / "model.safetensors")
        assert {k.removeprefix("timm_model.") for k in straight} == set(start)
        assert not torch.equal(straight["timm_model.blocks.0.attn.qkv.weight"], start["blocks.0.attn.qkv.weight"])
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=1e-6, msg=k)


@STUDENTS
def test_accumulation_and_processes_rebalance_over_the_optimizer_step(tmp_path, request, student, two_processes):
    """16 x GA 1 == 8 x GA 2 == torchrun 2 x 8: LTKD's group sums cover the whole optimizer step (a strongly
    head-biased teacher makes per-micro-batch sums differ; a BatchNorm-free student keeps the forward
    independent of how the batch is split). Students: the default test_convnext, and a (LayerNorm-only) ViT
    started from a checkpoint folder, whose 32-px batches the trainer resizes for the 160-px teacher. The
    single-process runs train here, torchrun's in two worker processes (two_process_jobs.py)."""
    init = student_init(request, student)
    folder = init[-1] if init else None
    runs = {}
    for name, batch, accumulation in (("full", 16, 1), ("accumulated", 8, 2)):
        result = tmp_path / f"{name}.json"
        first_step(tmp_path / name, result, batch=batch, accumulation=accumulation, lr=0.5, student_init=folder)
        runs[name] = result
    runs["two processes"] = two_processes.root / ("default.json" if student == "default" else "vit.json")
    logs = {name: json.loads(path.read_text()) for name, path in runs.items()}
    weights_after = {name: load_file(f"{path}.safetensors") for name, path in runs.items()}
    # Independent reference of the first step: the student as it starts, the teacher on the batch it must see (for
    # the ViT, the 32-px batch resized to the teacher's 160 px, bilinear as its pretrained_cfg says; both models
    # normalise with mean = std = 0.5, so nothing else changes).
    model = make_student() if folder is None else pretrained_student(folder)
    teacher, images = biased_teacher().eval(), SyntheticImages(16).images
    if folder is not None:
        images_t = F.interpolate(images, size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
    else:
        images_t = images
    with torch.no_grad():
        t = teacher(images_t)
    index = ClassGroups.from_counts(CLASS_COUNTS, 3).index()
    s = model(pixel_values=images).logits
    whole = ltkd_loss(s, t, index)
    assert logs["full"]["cross_group"] == pytest.approx(whole["cross_group"].item(), rel=1e-4, abs=1e-6)
    # The checks have power: rebalancing each half of the batch on its own (a per-micro-batch or per-process
    # loss) moves the step's weights far beyond their 1e-6 tolerance below, and, for the default student, the
    # cross-group term far beyond its own.
    halves = [ltkd_loss(s[i : i + 8], t[i : i + 8], index) for i in (0, 8)]
    params = [p for p in model.parameters() if p.requires_grad]
    grad_whole = torch.autograd.grad(whole["loss"], params, retain_graph=True)
    grad_halves = torch.autograd.grad((halves[0]["loss"] + halves[1]["loss"]) / 2, params)
    assert max((0.5 * (a - b)).abs().max().item() for a, b in zip(grad_whole, grad_halves)) > 100 * 1e-6
    if student == "default":
        halves_cross = sum(h["cross_group"].item() for h in halves) / 2
        assert abs(halves_cross - whole["cross_group"].item()) > 100 * 1e-6
    # Tolerances from float32 rounding: every term is built from log-sum-exps of O(1-10) logits, so summing in
    # another order (two micro-batches, or an all-reduce) moves it by a few eps (1.2e-7) times those magnitudes,
    # however small the term itself is: an absolute 1e-6 bound on terms, and 1e-6 on weights after one step
    # (lr 0.5 times gradients that agree to ~1e-7).
    for name in ("accumulated", "two processes"):
        for key in ("ce", "cross_group", "within_group", "distill", "loss"):
            assert logs[name][key] == pytest.approx(logs["full"][key], rel=1e-5, abs=1e-6), (name, key)
        for key, value in weights_after["full"].items():
            torch.testing.assert_close(weights_after[name][key], value, rtol=1e-5, atol=1e-6, msg=(name, key))
    initial = unwrap_timm(model).state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in weights_after["full"].items())


def test_each_process_draws_its_own_augmentation(two_processes):
    """Trainer seeds every process alike, so each drew the same crops and flips for its share of the batch: rank 1's
    j-th image augmented as rank 0's j-th (a 2-process run's 256 cached rows held 88 distinct outcomes, each an even
    number of times). Every training image here is one picture: two samples differ by their augmentation alone.
    Both paths (augmented on the device, and by the data loader) train one after the other (two_process_jobs.py)."""
    result = two_processes.root / "augmentation"
    for path in ("device", "loader"):
        first, second = (torch.load(f"{result}.{path}.rank{rank}.pt") for rank in (0, 1))
        assert set(first["index"].tolist()).isdisjoint(second["index"].tolist()), path  # one shuffled order, split
        assert not torch.equal(first["pixel_values"], second["pixel_values"]), path


# -- bad input --------------------------------------------------------------------------------------
def test_class_counts_that_disagree_with_the_student(tmp_path):
    with pytest.raises(ValueError, match="The training split has 5 classes but the student has 6 outputs"):
        make_trainer(make_config(tmp_path), class_counts=CLASS_COUNTS[:5])


def test_teacher_with_another_class_count(tmp_path):
    import timm

    teacher = timm.create_model("test_resnet", num_classes=NUM_CLASSES + 1)
    with pytest.raises(ValueError, match="The teacher predicts 7 classes but the dataset has num_classes=6"):
        make_trainer(make_config(tmp_path), teacher_model=teacher)


def test_teacher_labels_in_another_order(tmp_path):
    teacher = make_teacher()
    teacher.pretrained_cfg = {**teacher.pretrained_cfg, "label_names": [f"c{i}" for i in reversed(range(NUM_CLASSES))]}
    with pytest.raises(
        ValueError, match="label names differ .* at 6 of 6 classes: class 0: teacher 'c5' vs dataset 'c0'"
    ):
        make_trainer(make_config(tmp_path), teacher_model=teacher)


def test_nan_teacher_stops_with_the_step(tmp_path):
    teacher = make_teacher()
    with torch.no_grad():
        unwrap_timm(teacher).get_classifier().bias[2] = float("nan")
    trainer = make_trainer(make_config(tmp_path), teacher_model=teacher)
    before = weights(trainer.model)
    with pytest.raises(ValueError, match="non-finite .* at step 0; training stopped before the optimizer"):
        trainer.train()
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_a_diverging_run_stops_at_its_first_non_finite_loss_and_saves_no_nan(tmp_path):
    """At learning rate 1e8 the loss goes 15, 1e15, NaN: Trainer's logging_nan_inf_filter logged the NaN steps as the
    window's mean, the run finished, and save_model wrote NaN weights that the recipes then reused as a finished
    stage."""
    diverging = dict(learning_rate=1e8, max_grad_norm=0.0, max_steps=6)
    trainer = make_trainer(make_config(tmp_path / "checked", **diverging))
    with pytest.raises(ValueError, match=r"The training loss is non-finite \(NaN/inf\) at step 2; training stopped "
                                         r"before the optimizer used it.*lower --learning_rate \(now 1e\+08\), or "
                                         r"clip the gradients with --max_grad_norm \(now 0, off"):
        trainer.train()
    assert trainer.state.global_step == 2
    # with the check off the run goes on to its end; its NaN weights are still never written
    unchecked = make_trainer(make_config(tmp_path / "unchecked", check_loss_finite=False, **diverging))
    unchecked.train()
    assert unchecked.state.global_step == 6
    assert not all(torch.isfinite(v).all() for v in unchecked.model.state_dict().values())
    with pytest.raises(ValueError, match=r"of the model's tensors hold NaN/inf \(.*\), so nothing was saved to "
                                         r".*unchecked\. The run diverged"):
        unchecked.save_model()
    assert not (tmp_path / "unchecked" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(distill_loss="kdd"), "--distill_loss 'kdd' is not a registered loss"),
        (dict(distill_loss_kwargs="temperature=0"), "--distill_loss_kwargs temperature=0.0: temperature must be"),
        (dict(distill_loss_kwargs={"alpha": -1.0}), "--distill_loss_kwargs alpha=-1.0: alpha must be .*>= 0"),
        (dict(distill_loss_kwargs="alpha=1,alpha=2"), "--distill_loss_kwargs 'alpha=1,alpha=2': alpha given twice"),
        (dict(num_groups=0), "--num_groups must be an integer >= 1, got 0"),
        (dict(num_groups=True), "--num_groups must be an integer >= 1, got True"),
        # inf passed ">= 0": the student's weights went non-finite while the log said loss 0.0 (ce_weight), or the
        # CE was nan (ce_logit_adjustment), or the distillation term never ramped up (warmup_epochs)
        (dict(ce_weight=float("inf")), r"--ce_weight must be a finite number >= 0, got inf"),
        (dict(ce_logit_adjustment=float("inf")), r"--ce_logit_adjustment must be a finite number >= 0, got inf"),
        (dict(warmup_epochs=float("inf")), r"--warmup_epochs must be a finite number >= 0, got inf"),
        (dict(ce_weight="2"), r"--ce_weight must be a finite number >= 0, got '2'"),
        # cross-entropy alone, weighted 0: the loss was 0 at every step and the student learned nothing
        (dict(distill_loss="ce", ce_weight=0.0), r"^--ce_weight 0 with --distill_loss ce: the loss is ce_weight \* CE "
                                                 r"alone, so it would be 0"),
        (dict(per_device_eval_batch_size=0), "--per_device_eval_batch_size must be >= 1, got 0"),
        # Trainer divided by it in every evaluation: a ZeroDivisionError traceback once training had finished
        (dict(eval_accumulation_steps=0), r"--eval_accumulation_steps must be >= 1 \(or unset\), got 0"),
        (dict(teacher_dtype="half"), "--teacher_dtype must be one of"),
        (dict(lr_decay_epochs=[10.0]), r"--lr_decay_epochs \[10.0\] needs epoch-based training, but --max_steps 2"),
        (dict(lr_decay_rate=0.0), r"--lr_decay_rate must be in \(0, 1\) .*, got 0.0"),
        # a step decay by 1: the schedule's epochs were recorded on the card and changed nothing
        (dict(lr_decay_epochs=[1.0], lr_decay_rate=1.0, max_steps=-1, num_train_epochs=2),
         r"--lr_decay_rate must be in \(0, 1\) \(1 keeps the learning rate unchanged at each --lr_decay_epochs step\)"),
        # what torch or transformers refused only after the data was read, or took without effect
        (dict(learning_rate=-1.0), "--learning_rate must be >= 0, got -1.0"),
        (dict(lr_decay_rate=0.5), "--lr_decay_rate 0.5 multiplies the learning rate at each of --lr_decay_epochs, "
                                  "which is none"),
        (dict(weight_decay=-1.0), "--weight_decay must be >= 0, got -1.0"),
        (dict(label_smoothing_factor=2.0), r"--label_smoothing_factor must be in \[0, 1\), got 2.0"),
        (dict(seed=-1), r"--seed must be in \[0, 2\*\*32 - 1\]"),
        # transformers' length samplers for text: Trainer failed at the teacher's first batch without the flag's name
        (dict(train_sampling_strategy="group_by_length"), "--train_sampling_strategy group_by_length orders text "
                                                          "samples by their length, and image samples have none"),
        (dict(train_sampling_strategy="batch_rebalance"), "--train_sampling_strategy batch_rebalance orders text"),
        # accelerate refused it when Trainer was built, once the data was read, without the flag's name
        (dict(torch_compile_backend="bogus"), r"--torch_compile_backend bogus: not a backend accelerate knows; "
                                              r"choose one of \['no', 'eager'"),
        # torch's KeyError traceback when the trainer compiled the model
        (dict(torch_compile_mode="bogus"), r"--torch_compile_mode bogus: not a mode of torch.compile; choose one of "
                                           r"\['default'"),
        # the data loader's "num_workers option should be non-negative" once the data was read
        (dict(dataloader_num_workers=-1), r"--dataloader_num_workers must be >= 0 \(0 loads in the main process\)"),
        # torch's "persistent_workers option needs num_workers > 0" once the data was read
        (dict(dataloader_persistent_workers=True), "--dataloader_persistent_workers true keeps the data loader's "
                                                   "worker processes between epochs, and --dataloader_num_workers is 0"),
        # torch's "multiprocessing_context can only be used with multi-process loading" once the data was read
        (dict(dataloader_multiprocessing_context="spawn"), r"^--dataloader_multiprocessing_context spawn starts the "
                                                           r"data loader's worker processes, and "
                                                           r"--dataloader_num_workers is 0"),
        # taken as is: a negative logging interval
        (dict(logging_steps=-1), r"--logging_steps must be > 0 \(a number of steps, or a fraction of the run below "
                                 r"1\)"),
        # the first momentum was dropped without a word
        (dict(optim_args="momentum=0.9,momentum=0.5"), "--optim_args 'momentum=0.9,momentum=0.5': momentum is given "
                                                       "twice, and only the last would count"),
        # AcceleratorConfig's TypeError traceback in TrainingArguments' own checks
        # json's own message, naming no flag
        (dict(lr_scheduler_kwargs="{power: 2}"), r"--lr_scheduler_kwargs \{power: 2\}: not a JSON object \(Expecting "
                                                 r"property name enclosed in double quotes"),
        (dict(accelerator_config='{"bogus": 1}'), r"--accelerator_config \{\"bogus\": 1\}: AcceleratorConfig has no "
                                                  r"\['bogus'\]; it takes \['dispatch_batches'"),
        # another order of batches (another model) recorded as the same run, and reused as it
        (dict(accelerator_config='{"use_seedable_sampler": false}'), r"use_seedable_sampler=False changes which images "
                                                                    r"each process trains on at each step"),
        (dict(accelerator_config={"split_batches": True, "non_blocking": True}), r"^--accelerator_config .*: "
                                                                                 r"split_batches=True changes which"),
        # read by the loggers alone: with none, taken and never used
        (dict(run_name="exp1"), r"^--run_name exp1 names the run for the loggers of --report_to, which is 'none'"),
        (dict(project="birds"), r"^--project birds: only Trackio reads it, and --report_to is none"),
        (dict(report_to=["bogus"]), "--report_to bogus: bogus is not supported, only azure_ml"),
        (dict(optim="adamw_torch", optim_args=None, adam_beta1=5.0), r"--adam_beta1 must be in \[0, 1\), got 5.0"),
        (dict(load_best_model_at_end=True), "--load_best_model_at_end true chooses the checkpoint by evaluation, but "
                                            "--eval_strategy is 'no'"),
        # transformers took each without a word: an interval its strategy never reads, and a limit below 1 that
        # keeps every checkpoint
        (dict(eval_strategy="epoch", eval_steps=5), r"^--eval_steps 5 is the interval of --eval_strategy steps, and "
                                                    r"--eval_strategy is 'epoch', so it would change nothing"),
        (dict(eval_delay=2), r"^--eval_delay 2 postpones the first evaluation during training, and --eval_strategy is "
                             r"'no'"),
        (dict(save_steps=1), r"^--save_steps 1 is the interval of --save_strategy steps, and --save_strategy is 'no'"),
        (dict(save_strategy="epoch", save_total_limit=0), r"^--save_total_limit 0: transformers deletes no "
                                                          r"checkpoint for a limit below 1"),
        # with workers, batches in the order they finished loading: another model each run, recorded as the same
        # nothing to rank without evaluation, and nothing to order without a metric: recorded, and changed nothing
        (dict(metric_for_best_model="accuracy"), r"^--metric_for_best_model accuracy ranks the evaluations during "
                                                 r"training, and --eval_strategy is 'no'"),
        # Trainer refused it when it was built, once the data was read, naming `args.metric_for_best_model`
        (dict(save_strategy="best"), r"^--save_strategy best saves a checkpoint whenever --metric_for_best_model "
                                     r"improves, and none is set"),
        (dict(greater_is_better=False), r"^--greater_is_better false says which way --metric_for_best_model improves, "
                                        r"and none is set"),
        (dict(dataloader_in_order=False), r"^--dataloader_in_order False is not supported by DistillationTrainer: the "
                                          r"data loader's workers would hand over each batch as soon as it is loaded"),
        (dict(max_steps=-1, lr_decay_epochs=[1.0], lr_scheduler_type="cosine"),
         r"--lr_scheduler_type cosine: --lr_decay_epochs \[1.0\] sets the learning-rate schedule"),
        (dict(max_steps=-1, lr_decay_epochs=[1.0], lr_scheduler_type="linear", warmup_steps=4),
         r"--warmup_steps 4: --lr_decay_epochs \[1.0\]"),
        (dict(lr_scheduler_kwargs="garbage"), "--lr_scheduler_kwargs 'garbage': pass a JSON object"),
        (dict(lr_scheduler_kwargs='{"foo": 1}'), r"--lr_scheduler_type constant takes no settings, not \['foo'\]"),
        (dict(optim_args="garbage"), "--optim_args 'garbage': write key=value pairs"),
        (dict(optim_args="momentm=0.9"), "--optim_args 'momentm=0.9': momentm changes nothing for --optim sgd"),
        (dict(optim_args="momentum=fast"), "--optim_args 'momentum=fast': --optim sgd cannot take it"),
        (dict(adam_beta1=0.5), "--adam_beta1 0.5 changes nothing for --optim sgd"),
        (dict(optim="adamw_torch", optim_args="momentum=0.9"), "momentum changes nothing for --optim adamw_torch"),
    ],
)
def test_config_range_checks(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(tmp_path, **overrides)


def test_a_logger_that_is_not_installed_is_refused_when_the_config_is_built(tmp_path):
    """transformers' callback raised a RuntimeError traceback once the data was read (--report_to wandb without
    wandb)."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    missing = next(name for name in INTEGRATION_TO_CALLBACK if name not in get_available_reporting_integrations())
    with pytest.raises(ValueError, match=rf"^--report_to {missing}: its package is not installed here"):
        make_config(tmp_path, report_to=[missing])
    assert make_config(tmp_path, report_to="none").report_to == []


def test_a_distributed_backend_in_one_process_is_refused_naming_the_flag(tmp_path, monkeypatch):
    """torch's "Default process group has not been initialized", naming no flag: the docs' CPU multi-process
    flags (--use_cpu true --ddp_backend gloo) copied into a plain command."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"^--ddp_backend gloo: it sets how the processes of a distributed run talk, "
                                         r"and this is one process"):
        make_config(tmp_path, ddp_backend="gloo", use_cpu=True)


def test_deepspeed_without_its_package_is_refused_naming_the_flag(tmp_path):
    """transformers raised importlib's PackageNotFoundError traceback, naming no flag."""
    import importlib.util

    if importlib.util.find_spec("deepspeed"):
        pytest.skip("deepspeed is installed")
    with pytest.raises(ValueError, match=r"^--deepspeed ds.json: deepspeed is not installed here"):
        make_config(tmp_path, deepspeed="ds.json")


@pytest.mark.parametrize(("optim", "package", "match"), [
    ("lomo", "lomo_optim", "You need to install `lomo_optim`"),
    ("adamw_torch_xla", "torch_xla", "Trainer failed to import syncfree AdamW from torch_xla"),
])
def test_an_optimizer_whose_package_is_missing_is_refused_naming_it(tmp_path, optim, package, match):
    """An ImportError traceback once the data was read (lomo), or a message blaming an empty --optim_args
    (adamw_torch_xla)."""
    import importlib.util

    if importlib.util.find_spec(package):
        pytest.skip(f"{package} is installed")
    with pytest.raises(ValueError, match=rf"^--optim {optim}: {match}"):
        make_config(tmp_path, optim=optim, optim_args=None)


def test_optimizer_settings_that_reach_the_optimizer_are_accepted(tmp_path):
    from transformers import Trainer

    sgd = make_config(tmp_path, optim_args="momentum=0.9, nesterov=true")
    assert Trainer.get_optimizer_cls_and_kwargs(sgd)[1] == {"lr": 0.05, "momentum": 0.9, "nesterov": True}
    adam = make_config(tmp_path, optim="adamw_torch", optim_args=None, adam_beta1=0.5, adam_epsilon=1e-6)
    assert Trainer.get_optimizer_cls_and_kwargs(adam)[1]["betas"] == (0.5, 0.999)
    scheduled = make_config(tmp_path, lr_scheduler_type="polynomial", lr_scheduler_kwargs='{"power": 2.0}')
    assert scheduled.lr_scheduler_kwargs == {"power": 2.0}


def test_a_dataset_without_labels_is_refused_when_the_trainer_is_built(tmp_path):
    """It failed with a bare KeyError: 'label' at the first training step."""
    from datasets import Dataset

    unlabelled = Dataset.from_dict({"image": [[0.0]] * 4})
    with pytest.raises(ValueError, match=r"train_dataset has the columns \['image'\] and no 'label' column"):
        make_trainer(make_config(tmp_path), train_dataset=unlabelled)
    with pytest.raises(ValueError, match=r"eval_dataset has the columns \['image'\] and no 'label' column"):
        make_trainer(make_config(tmp_path), eval_dataset=unlabelled)


def test_float16_without_its_autocast_is_refused(tmp_path):
    """On CPU accelerate has no float16 autocast: --fp16 true trained in float32 while the folders recorded fp16."""
    with pytest.raises(ValueError, match="--fp16 true: accelerate has no float16 autocast on cpu"):
        make_trainer(make_config(tmp_path, fp16=True))
    assert make_trainer(make_config(tmp_path, bf16=True)).accelerator.native_amp  # bf16 has one there


def test_config_defaults_for_image_distillation(tmp_path):
    config = DistillationConfig(output_dir=str(tmp_path), report_to="none")
    assert config.remove_unused_columns is False and config.label_names == ["labels"]
    assert config.distill_loss == "ltkd" and config.ce_weight == 1.0 and config.num_groups == 3
    assert config.distill_loss_kwargs == {}
    assert config.loss_settings() == dict(
        temperature=4.0, alpha=6.0, beta=6.0, rebalance=True, reweight=True, sync_across_processes=True
    )
    # None is "not set" (the loss trains with alpha 6): the recorded settings said alpha None
    unset = DistillationConfig(output_dir=str(tmp_path), report_to="none", distill_loss_kwargs={"alpha": None})
    assert unset.distill_loss_kwargs == {} and unset.loss_settings() == config.loss_settings()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine's run pins its batches")
def test_a_cpu_run_pins_no_memory_and_torch_does_not_warn(tmp_path):
    """transformers' default dataloader_pin_memory=True has nothing to pin into on a CPU (it is switched off only
    with use_cpu=True), and torch warned at every data loader the Python API built there."""
    trainer = make_trainer(make_config(tmp_path, use_cpu=False))
    assert trainer.args.dataloader_pin_memory is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
        trainer.evaluate(SyntheticImages(8))
    assert not [w for w in caught if "pin_memory" in str(w.message)]


def test_step_schedule_decays_at_the_given_epochs(tmp_path):
    from transformers import TrainerCallback

    class RecordLR(TrainerCallback):
        def __init__(self):
            self.used = []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            self.used.append(optimizer.param_groups[0]["lr"])

    record = RecordLR()
    config = make_config(
        tmp_path, max_steps=-1, num_train_epochs=4, learning_rate=0.4, lr_decay_epochs=[1, 3], lr_decay_rate=0.1,
        lr_scheduler_type="linear",  # Trainer's default: the step schedule replaces it (another type is refused)
    )
    make_trainer(config, train_dataset=SyntheticImages(16), callbacks=[record]).train()
    # 2 steps per epoch: epoch 0 at 0.4, epochs 1-2 at 0.04, epoch 3 at 0.004 (MultiStepLR by epoch)
    assert record.used == pytest.approx([0.4, 0.4, 0.04, 0.04, 0.04, 0.04, 0.004, 0.004])


def test_cross_entropy_alone_needs_no_teacher(tmp_path):
    student = make_student()
    before = weights(student)
    trainer = make_trainer(make_config(tmp_path, distill_loss="ce"), model=student, teacher_model=None)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "ce" in h]
    assert logged and all(
        "cross_group" not in h and h["loss"] == pytest.approx(h["ce"], rel=1e-6, abs=1e-6) for h in logged
    )
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="teacher_model is None but distill_loss='ltkd' needs a teacher"):
        make_trainer(make_config(tmp_path), teacher_model=None)
    # a warm-up ramps the distillation term, which cross-entropy alone does not have: refused, not recorded
    with pytest.raises(ValueError, match=r"^--warmup_epochs 2 with --distill_loss ce: .*pass --warmup_epochs 0"):
        make_trainer(make_config(tmp_path, distill_loss="ce", warmup_epochs=2), teacher_model=None)


def test_a_teacher_given_to_cross_entropy_does_not_run_in_training(tmp_path):
    """With distill_loss="ce" a teacher given (every ce cell of ltkd-table gets the seed's teacher) ran on every
    training batch and its logits were thrown away."""
    teacher, calls = make_teacher(), []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    students = [make_student(), make_student()]
    for student, given in zip(students, (teacher, None)):
        config = make_config(tmp_path / str(given is None), distill_loss="ce", eval_strategy="no")
        make_trainer(config, model=student, teacher_model=given, eval_dataset=SyntheticImages(6)).train()
    assert calls == []  # 2 steps, no teacher forward
    for (key, a), b in zip(students[0].state_dict().items(), students[1].state_dict().values()):
        assert torch.equal(a, b), key  # the same run as without a teacher


def test_channels_last_changes_memory_format_not_results(tmp_path):
    logs = []
    for channels_last in (False, True):
        student, teacher = make_student(), make_teacher()
        config = make_config(tmp_path / str(channels_last), max_steps=1, learning_rate=0.0, channels_last=channels_last)
        trainer = make_trainer(config, model=student, teacher_model=teacher)
        trainer.train()
        conv = next(p for p in teacher.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        logs.append(trainer.state.log_history[0])
    for key in ("ce", "cross_group", "within_group"):
        assert logs[1][key] == pytest.approx(logs[0][key], rel=1e-4, abs=1e-6), key


def test_teacher_in_bfloat16_on_request(tmp_path):
    logs = {}
    for dtype in ("float32", "bfloat16"):
        teacher = make_teacher()
        config = make_config(tmp_path / dtype, max_steps=1, learning_rate=0.0, teacher_dtype=dtype)
        trainer = make_trainer(config, teacher_model=teacher)
        trainer.train()
        assert next(teacher.parameters()).dtype == getattr(torch, dtype)
        logs[dtype] = trainer.state.log_history[0]
    assert logs["bfloat16"]["ce"] == pytest.approx(logs["float32"]["ce"], rel=1e-6, abs=1e-6)  # student untouched
    for key in ("within_group", "distill"):  # the teacher's logits carry bf16 rounding, the loss stays float32
        # bf16 rounds O(1-10) logits by up to ~0.03: a term moves by ~1% of itself, and by ~0.03^2 = 1e-3 near 0
        assert logs["bfloat16"][key] == pytest.approx(logs["float32"][key], rel=0.05, abs=1e-3), key


def test_compute_loss_outside_the_training_loop_rebalances_its_own_batch(tmp_path):
    """After train(), a training-mode compute_loss on another batch rebalanced with the last window's group sums
    (those of the images the loop last drew), not its own."""
    trainer = make_trainer(make_config(tmp_path, max_steps=1, distill_loss="ltkd", learning_rate=0.0))
    trainer.train()
    assert trainer._window_statistics is not None  # the loop's last window
    other = SyntheticImages(8, seed=5)
    inputs = {"pixel_values": other.images, "labels": other.labels}
    model = trainer.model.train()
    loss, outputs = trainer.compute_loss(model, inputs, return_outputs=True)
    with torch.no_grad():
        teacher_logits = trainer.teacher_logits(other.images)
    expected = ltkd_loss(outputs["logits"].detach(), teacher_logits, trainer.loss_fn.class_to_group, temperature=4.0,
                         alpha=6.0, beta=6.0)["loss"]
    ce = torch.nn.functional.cross_entropy(outputs["logits"].detach(), other.labels)
    # float32 terms of O(1-10) logits computed by two paths: 1e-5 relative, 1e-6 floor
    assert loss.item() == pytest.approx((ce + expected).item(), rel=1e-5, abs=1e-6)
