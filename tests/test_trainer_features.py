"""DistillationTrainer with the feature losses (ReviewKD, CAT-KD): a step on the paper's CIFAR pairs against a plain
float64 computation, the fusion modules in the optimizer, clipping and checkpoints, an exact resume after SIGKILL,
gradient averaging under torchrun, and a saved folder / Hub upload that holds the student only.

References come from the models' own ``forward_intermediates`` and the loop references of
``test_losses_features`` (no hooks, no ``ltkd_hf.losses`` code).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import transformers.utils.hub
from safetensors.torch import load, load_file

from ltkd_hf.losses import CATKD_AUTHOR_SETTINGS
from ltkd_hf.models import create_student, unwrap_timm

from test_losses_features import _preact_reference, ref_cat, ref_hcl, ref_review
from tiny_setup import NUM_CLASSES, SyntheticImages, make_config, make_student, make_trainer
from trainer_worker import reviewkd_setup, trained_state

pytestmark = pytest.mark.heavy  # scheduled first (conftest.py)

HERE = Path(__file__).parent
WORKER = HERE / "trainer_worker.py"
LABELS = [f"c{i}" for i in range(NUM_CLASSES)]


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _record_inputs(module, seen):
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))


# ---------------------------------------------------------------------------------------------
# one step on the paper's pairs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["reviewkd", "catkd"])
@pytest.mark.parametrize(
    "teacher_name,student_name",
    [("cifar_resnet32x4", "cifar_resnet8x4"), ("cifar_wrn_40_2", "cifar_shufflenet_v1"),
     ("cifar_vgg13", "cifar_mobilenet_v2")],
)
def test_one_step_matches_a_plain_computation(tmp_path, teacher_name, student_name, loss):
    """One SGD step (batch 4 = the whole data set, lr 0.05, weight decay, no clipping): the logged terms are the
    loss of the step's batch at the starting weights, computed in float64 from the models' own intermediates;
    the trainable parts move by exactly -lr * (gradient + weight decay); the teacher does not change at all."""
    lr, wd = 0.05, 5e-4
    torch.manual_seed(0)
    student = create_student(student_name, num_classes=NUM_CLASSES, label_names=LABELS)
    teacher = timm.create_model(teacher_name, num_classes=NUM_CLASSES)
    with torch.no_grad():  # BatchNorm statistics of a trained scale, so the features are not all ~0
        teacher.train()(SyntheticImages(8, seed=7).images)
    teacher.eval()
    teacher_before = _state(teacher)
    settings = CATKD_AUTHOR_SETTINGS[(teacher_name, student_name)] if loss == "catkd" else {}
    config = make_config(
        tmp_path, distill_loss=loss, distill_loss_kwargs=settings, per_device_train_batch_size=4, max_steps=1,
        learning_rate=lr, weight_decay=wd, max_grad_norm=0.0,
    )
    data = SyntheticImages(4, seed=3)
    trainer = make_trainer(config, model=student, teacher_model=teacher, train_dataset=data)
    trainer.loss_fn.eval()  # as an evaluate() before would leave it: training must put the ABFs' BN back in train mode
    bare = unwrap_timm(student)
    student_ref, loss_ref = copy.deepcopy(bare).train(), copy.deepcopy(trainer.loss_fn).double()
    student_before = _state(bare)
    loss_params_before = {n: p.detach().clone() for n, p in trainer.loss_fn.named_parameters()}
    seen_s, seen_t = [], []
    _record_inputs(bare, seen_s)
    _record_inputs(teacher, seen_t)

    trainer.train()
    log = trainer.state.log_history[0]

    # the step's batch, in the loader's order (BatchNorm sees the same sums), with its labels
    (x,), (xt,) = seen_s, seen_t
    torch.testing.assert_close(xt, x, rtol=0, atol=0)  # same preprocessing: the teacher sees the student's input
    index = [int(torch.cdist(img.flatten()[None], data.images.flatten(1)).argmin()) for img in x]
    assert sorted(index) == list(range(4))
    labels = data.labels[index]
    with torch.no_grad():
        final_s, stages_s = student_ref.forward_intermediates(x)
        pooled_s = student_ref.forward_head(final_s, pre_logits=True)
        final_t, stages_t = teacher.forward_intermediates(x)
        pooled_t = teacher.forward_head(final_t, pre_logits=True)
    classifier = student_ref.get_classifier()
    w_name = next(n for n, p in student_ref.named_parameters() if p is classifier.weight)
    w = classifier.weight.detach().double().requires_grad_(True)
    logits = pooled_s.double() @ w.T + classifier.bias.detach().double()
    ce = F.cross_entropy(logits, labels)
    # float32 terms computed from O(1-10) features and logits vs float64: a few eps (1.2e-7) of those apart
    assert log["ce"] == pytest.approx(ce.item(), rel=1e-5, abs=1e-6)

    if loss == "reviewkd":
        weight = loss_ref.reviewkd_loss_weight
        s_levels = [f.double() for f in stages_s[1:]] + [pooled_s.double()[:, :, None, None]]
        t_levels = [f.double() for f in _preact_reference(teacher, x, stages_t)[1:]] + [
            pooled_t.double()[:, :, None, None]
        ]
        reviewed = ref_review(loss_ref.abfs, s_levels, [tuple(t.shape[-2:]) for t in t_levels], training=True)
        term, name = ref_hcl(reviewed, t_levels), "hcl"
        params = dict(loss_ref.named_parameters())
        grads = dict(zip(params, torch.autograd.grad(weight * term, list(params.values()))))
        assert len(params) > 0
        # every fusion parameter is in the optimizer, with the student's decay rule (none on biases) ...
        groups = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
        for n, p in trainer.loss_fn.named_parameters():
            assert groups[id(p)] == (0.0 if n.endswith("bias") else wd), n
        # ... and made exactly the SGD step: float64 gradients vs the trainer's float32 ones agree to ~1e-6
        # relative; 1e-6 absolute covers float32 rounding of the stored weights (O(1) values), far below the steps
        after = dict(trainer.loss_fn.named_parameters())
        steps = []
        for n, p in params.items():
            before = loss_params_before[n].double()
            expected = -lr * (grads[n] + (0.0 if n.endswith("bias") else wd) * before)
            assert not torch.equal(after[n].detach(), loss_params_before[n]), n
            torch.testing.assert_close(after[n].detach().double() - before, expected, rtol=1e-3, atol=1e-6, msg=n)
            steps.append(expected.abs().max().item())
        assert max(steps) > 1e-3, steps
    else:
        weight = settings["catkd_loss_weight"]
        term = ref_cat(final_s.double(), w, final_t.double(), teacher.get_classifier().weight.double(), 1.0,
                       settings["cam_resolution"], settings["normalize_cams"])
        name = "cat"
        assert not list(trainer.loss_fn.parameters())
        assert len(trainer.optimizer.param_groups) == 2  # the student's two groups, nothing added
        # the CAMs' gradient reaches the student's classifier: its step is -lr * (CE + CAT + decay) gradients
        grad_ce, grad_cat = (torch.autograd.grad(t, [w], retain_graph=True)[0] for t in (ce, weight * term))
        expected = -lr * (grad_ce + grad_cat + wd * w.detach())
        after = dict(bare.named_parameters())[w_name].detach().double()
        torch.testing.assert_close(after - w.detach(), expected, rtol=1e-3, atol=1e-6)
        assert (lr * grad_cat).abs().max() > 1e-4  # the check has power: CAT moves the classifier

    assert log[name] == pytest.approx(term.item(), rel=1e-4, abs=1e-6)
    assert log["distill"] == pytest.approx(weight * term.item(), rel=1e-4, abs=1e-6 * weight)
    assert log["loss"] == pytest.approx(ce.item() + weight * term.item(), rel=1e-4, abs=1e-6 * (1 + weight))
    assert all(torch.isfinite(torch.tensor(log[k])) for k in ("loss", "ce", "distill", name))
    assert trainer.loss_fn.training
    assert any(not torch.equal(v, student_before[k]) for k, v in bare.state_dict().items())
    for k, v in teacher.state_dict().items():  # weights and BatchNorm buffers, bit for bit
        assert torch.equal(v, teacher_before[k]), k
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())


# ---------------------------------------------------------------------------------------------
# ReviewKD's fusion modules: resume, DDP, clipping, what is saved
# ---------------------------------------------------------------------------------------------
def run_worker(*args, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread each is fastest, and never oversubscribes
    proc = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def test_reviewkd_resume_after_sigkill_reaches_the_same_weights(tmp_path):
    """6 steps (SGD momentum, weight decay, the warm-up ramp), killed after the checkpoint of step 4 and resumed:
    the student and the ABFs (weights and BatchNorm statistics) end where the straight run ends."""
    killed = run_worker("run", tmp_path / "killed", tmp_path / "unused.safetensors", "--reviewkd", "--kill-at-save", 4,
                        check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoint = tmp_path / "killed" / "checkpoint-4"
    assert (checkpoint / "distill_loss.safetensors").is_file() and not (tmp_path / "unused.safetensors").exists()
    # the resumed run, then the same run from scratch, in one fresh process
    run_worker("run", tmp_path / "killed", tmp_path / "resumed.safetensors", "--reviewkd", "--resume",
               "--then-straight", tmp_path / "straight", tmp_path / "straight.safetensors")
    straight, resumed = load_file(tmp_path / "straight.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert set(straight) == set(resumed)
    abf_keys = [k for k in straight if k.startswith("distill_loss.abfs.")]
    assert any(k.endswith("conv2.0.weight") for k in abf_keys) and any(k.endswith("running_mean") for k in abf_keys)
    # the checkpoint holds the ABFs of step 4: not their start, not their end
    at_4 = load_file(checkpoint / "distill_loss.safetensors")
    assert set(at_4) == {k.removeprefix("distill_loss.") for k in abf_keys}
    start = reviewkd_setup(tmp_path / "unused")
    fresh = make_trainer(start[2], model=start[0], teacher_model=start[1]).loss_fn.state_dict()
    for k in ("abfs.0.conv1.0.weight", "abfs.2.conv2.1.running_var"):
        assert not torch.equal(at_4[k], fresh[k]) and not torch.equal(at_4[k], straight[f"distill_loss.{k}"]), k
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=1e-6, msg=k)


def _single_process_step(tmp_path, name, batch, accumulation, samples=8):
    student, teacher, config = reviewkd_setup(
        tmp_path / name, max_steps=1, learning_rate=0.5, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, max_grad_norm=0.0,
    )
    trainer = make_trainer(config, model=student, teacher_model=teacher, train_dataset=SyntheticImages(samples))
    trainer.train()
    return trainer.state.log_history[0], trained_state(trainer)


def _parameters(state, prefix):
    """The trained parameters (no BatchNorm buffers) of the student ("") or the loss ("distill_loss.")."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v for k, v in state.items() if k.startswith(prefix) and not k.endswith(buffers)}


def test_reviewkd_under_torchrun_averages_the_fusion_gradients(tmp_path, two_processes):
    """torchrun 2 x batch 4: after one step (lr 0.5) both processes hold the same ABFs, equal to one process
    accumulating the same two micro-batches of 4 (GA 2). They are not those of one process on the batch of 8: the
    ABFs' (and the student's) BatchNorm normalise with each process's own batch statistics, as in the authors'
    single-GPU code with a batch of 4 and as any BatchNorm network under DDP without SyncBatchNorm."""
    result = two_processes.root / "reviewkd.json"  # trained by two_process_jobs.py
    ranks = [load_file(f"{result}.rank{i}.safetensors") for i in (0, 1)]
    logged = json.loads(result.read_text())
    accumulated_log, accumulated = _single_process_step(tmp_path, "accumulated", batch=4, accumulation=2)
    _, whole = _single_process_step(tmp_path, "whole", batch=8, accumulation=1)
    _, half = _single_process_step(tmp_path, "half", batch=4, accumulation=1, samples=4)
    start = reviewkd_setup(tmp_path / "unused")
    initial = {f"distill_loss.{k}": v for k, v in make_trainer(start[2], model=start[0], teacher_model=start[1])
               .loss_fn.state_dict().items()}

    abfs = [_parameters(r, "distill_loss.") for r in ranks]
    assert abfs[0] and set(abfs[0]) == set(abfs[1])
    for k in abfs[0]:  # the same averaged gradient and the same start: bit for bit
        assert torch.equal(abfs[0][k], abfs[1][k]), k
        assert not torch.equal(abfs[0][k], initial[k]), k
    for prefix in ("distill_loss.", ""):  # float32 sums in another order: a few ulps
        for k, v in _parameters(accumulated, prefix).items():
            torch.testing.assert_close(ranks[0][k], v, rtol=1e-5, atol=1e-6, msg=k)
    for key in ("ce", "hcl", "distill", "loss"):
        assert logged[key] == pytest.approx(accumulated_log[key], rel=1e-5, abs=1e-6), key  # as the weights above

    def distance(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in _parameters(a, "distill_loss."))

    assert distance(ranks[0], whole) > 1e-3  # per-process BatchNorm statistics: not the batch of 8
    assert distance(ranks[0], half) > 1e-3  # one process's own gradient would give other ABFs: they were averaged


def test_clipping_covers_the_fusion_modules_and_the_loss_follows_train_eval(tmp_path):
    """max_grad_norm clips student and ABF gradients as one vector: with plain SGD at lr 1 the whole update has
    norm max_grad_norm (clipping the student alone would leave the ABFs' much larger step)."""
    student, teacher, config = reviewkd_setup(
        tmp_path, max_steps=1, learning_rate=1.0, optim_args=None, weight_decay=0.0, max_grad_norm=1e-3,
    )
    trainer = make_trainer(config, model=student, teacher_model=teacher, eval_dataset=SyntheticImages(6, seed=5))
    named = {f"s.{k}": p for k, p in unwrap_timm(student).named_parameters()}
    named.update({f"l.{k}": p for k, p in trainer.loss_fn.named_parameters()})
    before = {k: p.detach().clone() for k, p in named.items()}
    trainer.train()
    assert trainer.state.log_history[0]["grad_norm"] > 1.0  # clipping was active
    squares = {k: ((p.detach() - before[k]) ** 2).sum().item() for k, p in named.items()}
    total = sum(squares.values()) ** 0.5
    abf = sum(v for k, v in squares.items() if k.startswith("l.")) ** 0.5
    assert total == pytest.approx(1e-3, abs=1e-7)  # float32 weight differences: ~1e-8 rounding in a 1e-3 step
    assert abf > 1e-5
    assert trainer.loss_fn.training
    trainer.evaluate()
    assert not trainer.loss_fn.training and not any(m.training for m in trainer.loss_fn.modules())


def test_push_to_a_new_branch_creates_it(tmp_path, fake_hub, monkeypatch):
    """hub_revision names the branch Trainer uploads to, but Trainer never creates it: a push to a new branch failed
    (the Hub's "Invalid rev id") after the whole training."""
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers caches its HfApi (and endpoint)
    config = make_config(tmp_path / "run", max_steps=1, hub_model_id="alice/branched", hub_token=fake_hub.token,
                         hub_revision="seed-1")
    trainer = make_trainer(config, eval_dataset=SyntheticImages(6, seed=5))
    trainer.train()
    trainer.push_to_hub()
    trainer.push_to_hub()  # the branch exists now
    repo = fake_hub.repos["alice/branched"]
    assert repo.branches == {"main", "seed-1"} and repo.committed_to == ["seed-1", "seed-1"]
    assert "model.safetensors" in repo.files


def test_saved_folder_and_hub_upload_hold_the_student_only(tmp_path, fake_hub, monkeypatch):
    """The checkpoints carry distill_loss.safetensors; save_model's folder and what push_to_hub uploads hold the
    student's tensors alone, and the folder loads with timm."""
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers caches its HfApi (and endpoint)
    student, teacher, config = reviewkd_setup(
        tmp_path / "run", max_steps=2, save_strategy="steps", save_steps=1, hub_model_id="alice/reviewkd-student",
        hub_token=fake_hub.token,
    )
    trainer = make_trainer(config, model=student, teacher_model=teacher, eval_dataset=SyntheticImages(6, seed=5))
    trainer.train()
    bare = unwrap_timm(student).eval()
    student_state = bare.state_dict()
    loss_state = trainer.loss_fn.state_dict()
    assert loss_state and not set(loss_state) & set(student_state)
    # the last checkpoint has the loss's state as it ended
    saved_loss = load_file(tmp_path / "run" / "checkpoint-2" / "distill_loss.safetensors")
    assert set(saved_loss) == set(loss_state)
    assert all(torch.equal(saved_loss[k], v.cpu()) for k, v in loss_state.items())

    folder = tmp_path / "saved"
    trainer.save_model(str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "training_args.bin"]
    tensors = load_file(folder / "model.safetensors")
    assert set(tensors) == set(student_state)
    assert all(torch.equal(tensors[k], v) for k, v in student_state.items())
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = SyntheticImages(4, seed=9).images
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), bare(x), rtol=0, atol=0)

    trainer.push_to_hub()
    files = fake_hub.repos["alice/reviewkd-student"].files
    assert "model.safetensors" in files and not any("distill_loss" in name or "checkpoint-" in name for name in files)
    for name, data in files.items():
        if name.endswith(".safetensors"):
            assert set(load(data)) == set(student_state), name


def test_reviewkd_modules_start_from_the_seed(tmp_path):
    """The ABFs are initialised from args.seed, whatever the global generator's state (every process alike)."""
    states = []
    for global_seed, seed in ((5, 0), (6, 0), (6, 1)):
        student, teacher, config = reviewkd_setup(tmp_path, seed=seed)
        torch.manual_seed(global_seed)
        states.append(make_trainer(config, model=student, teacher_model=teacher).loss_fn.state_dict())
    key = "abfs.1.conv2.0.weight"
    assert torch.equal(states[0][key], states[1][key]) and not torch.equal(states[1][key], states[2][key])


def test_catkd_accumulation_matches_the_full_batch(tmp_path):
    """CAT-KD is a batch mean of per-sample terms and the teacher runs per micro-batch: 4 x GA 2 steps as 8 x 1
    does (a BatchNorm-free student, so that nothing else depends on how the batch is split)."""
    results = []
    for batch, accumulation in ((8, 1), (4, 2)):
        student = make_student()
        before = _state(student)
        config = make_config(tmp_path / str(batch), distill_loss="catkd", per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.5)
        trainer = make_trainer(config, model=student)
        trainer.train()
        results.append((trainer.state.log_history[0], _state(student)))
    assert any(not torch.equal(before[k], v) for k, v in results[0][1].items())
    # float32 means of O(1) per-sample terms in another order: a few eps (1.2e-7) apart
    assert results[1][0]["cat"] == pytest.approx(results[0][0]["cat"], rel=1e-5, abs=1e-6)
    for k, v in results[0][1].items():
        torch.testing.assert_close(results[1][1][k], v, rtol=1e-5, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------------------
# misuse
# ---------------------------------------------------------------------------------------------
def test_a_nan_teacher_stops_a_feature_loss_before_the_step(tmp_path):
    student, teacher, config = reviewkd_setup(tmp_path, max_steps=1)
    with torch.no_grad():
        teacher.get_classifier().bias[2] = float("nan")
    trainer = make_trainer(config, model=student, teacher_model=teacher)
    before = trained_state(trainer)
    with pytest.raises(ValueError, match="non-finite .* at step 0; training stopped before the optimizer"):
        trainer.train()
    after = trained_state(trainer)
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.endswith(
        ("running_mean", "running_var", "num_batches_tracked")))


def test_an_optimizer_without_the_fusion_modules_is_refused(tmp_path):
    student, teacher, config = reviewkd_setup(tmp_path, max_steps=1)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05)
    trainer = make_trainer(config, model=student, teacher_model=teacher, optimizers=(optimizer, None))
    with pytest.raises(ValueError, match=r"--distill_loss reviewkd trains modules of its own .* the optimizer passed "
                       r"in optimizers=\(...\) does not hold them; .*add_param_group"):
        trainer.train()
    optimizer.add_param_group({"params": list(trainer.loss_fn.parameters())})  # the fix the message names
    before = {k: v.clone() for k, v in trainer.loss_fn.state_dict().items()}
    trainer.train()
    assert not torch.equal(trainer.loss_fn.state_dict()["abfs.0.conv1.0.weight"], before["abfs.0.conv1.0.weight"])


def test_a_checkpoint_without_the_loss_state_is_not_resumed(tmp_path):
    student, teacher, config = reviewkd_setup(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    make_trainer(config, model=student, teacher_model=teacher).train()
    (tmp_path / "checkpoint-2" / "distill_loss.safetensors").unlink()
    student, teacher, config = reviewkd_setup(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    trainer = make_trainer(config, model=student, teacher_model=teacher)
    with pytest.raises(FileNotFoundError, match=r"checkpoint-2 holds no distill_loss.safetensors, but --distill_loss "
                       r"reviewkd trains modules of its own whose state an exact resume needs"):
        trainer.train(resume_from_checkpoint=True)
