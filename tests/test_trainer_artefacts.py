"""The trainer owns its artefacts: the README's Python API block end to end (save, report, card, push to a fake Hub
on 127.0.0.1), the teacher's input conversion derived from the two models' configs, the folders and checkpoints
written from the model state Trainer hands over, and the checked resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
import transformers.utils.hub
from huggingface_hub import ModelCard, hf_hub_download
from safetensors.torch import load_file

import ltkd_hf
from ltkd_hf.hub import save_student
from ltkd_hf.models import unwrap_timm

from test_hub_save import assert_three_loaders_agree
from tiny_setup import SyntheticImages, make_config, make_student, make_trainer
from trainer_worker import reviewkd_setup

REPO = Path(__file__).resolve().parents[1]


def readme_python_api_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_saves_reports_cards_and_pushes(fake_hub, tmp_path, monkeypatch):
    code = readme_python_api_block()
    # The only changes: a teacher made here instead of the demo's, 2 steps (no warm-up: the trainer refuses one as
    # long as the run), and the fake Hub's repo and token.
    teacher_dir = tmp_path / "teacher"
    names = [str(i) for i in range(10)]
    torch.manual_seed(0)
    save_student(timm.create_model("cifar_resnet8x4", num_classes=10), teacher_dir, label_names=names)
    replacements = {
        '"outputs/ltkd-demo/teacher"': repr(str(teacher_dir)),
        '"outputs/api-student"': repr(str(tmp_path / "student")),
        "num_train_epochs=30": "max_steps=2, report_to='none', use_cpu=True",
        "lr_decay_epochs=[20, 25]": "lr_scheduler_type='constant'",
        "warmup_epochs=5": "warmup_epochs=0",
        '"your-user/wrn40-1-digits-ltkd"': f"'alice/wrn40-1-digits-ltkd', hub_token={fake_hub.token!r}",
    }
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers caches its HfApi (and endpoint)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    trainer, student_dir = namespace["trainer"], tmp_path / "student"

    # The card's model-index holds evaluate()'s four accuracies; the card says how the run was made.
    evaluated = trainer.evaluate()
    card = ModelCard.load(student_dir / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    for key in ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail"):
        assert metrics[key] == evaluated[f"eval_{key}"], key
    assert card.data.datasets is None  # builtin:digits is not a Hub dataset
    assert "imbalance factor 20" in card.text and "| Training seed | 42 |" in card.text
    assert "| Teacher | `cifar_resnet8x4` |" in card.text and "| student (LTKD) |" in card.text
    # how it was optimised, as the README's arguments (and Trainer's default clipping) say; the row said only
    # "sgd momentum=0.9, learning rate 0.05"
    assert "| Optimizer | sgd momentum=0.9, learning rate 0.05, weight decay 0.0005 |" in card.text
    assert "| Learning-rate schedule | constant |" in card.text and "| Gradient clipping | norm 1 |" in card.text
    assert "| Weights evaluated | final weights (after step 2) |" in card.text

    # What went up is the folder with its card and report, without checkpoints; it loads everywhere alike.
    repo = fake_hub.repos["alice/wrn40-1-digits-ltkd"]
    assert {"model.safetensors", "config.json", "README.md", "report.json", "teacher_bias.png"} <= set(repo.files)
    assert not any(name.startswith("checkpoint-") for name in repo.files)
    downloaded = Path(hf_hub_download("alice/wrn40-1-digits-ltkd", "config.json")).parent
    hf_hub_download("alice/wrn40-1-digits-ltkd", "model.safetensors")  # into the same snapshot folder
    assert (downloaded / "model.safetensors").read_bytes() == (student_dir / "model.safetensors").read_bytes()
    assert_three_loaders_agree(downloaded, unwrap_timm(trainer.model.student).eval(), labels=names)
    # The token reached the push, not the pickled arguments each saved folder holds and the push uploads.
    secret = fake_hub.token.encode()
    assert trainer.args.hub_token == fake_hub.token
    assert secret not in Path(hf_hub_download("alice/wrn40-1-digits-ltkd", "training_args.bin")).read_bytes()
    assert not [p for p in tmp_path.rglob("training_args.bin") if secret in p.read_bytes()]


def test_teacher_gets_its_own_normalisation_without_a_transform(tmp_path):
    student = make_student()
    student_cfg = timm.data.resolve_data_config(model=unwrap_timm(student))
    teacher = timm.create_model(
        "test_resnet",
        num_classes=6,
        pretrained_cfg_overlay={"mean": (0.5, 0.25, 0.125), "std": (0.2, 0.4, 0.8), "input_size": student_cfg["input_size"]},
    )
    seen = []
    teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    data = SyntheticImages(8)
    trainer = make_trainer(make_config(tmp_path, max_steps=1, learning_rate=0.0), model=student, teacher_model=teacher,
                           train_dataset=data)
    trainer.train()
    # Independent computation: back to raw pixels with the student's statistics, forward with the teacher's.
    mean_s, std_s = (torch.tensor(student_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    mean_t, std_t = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1), torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1)
    expected = (data.images * std_s + mean_s - mean_t) / std_t
    (received,) = seen
    # the loader shuffles: match each input the teacher got to the batch image it came from
    order = [int(torch.cdist(r.flatten()[None], expected.flatten(1)).argmin()) for r in received]
    assert sorted(order) == list(range(8))
    torch.testing.assert_close(received, expected[order], rtol=1e-6, atol=1e-6)


def test_save_model_writes_the_folder_every_loader_reads(tmp_path):
    trainer = make_trainer(make_config(tmp_path, max_steps=1))
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    labels = [f"c{i}" for i in range(6)]
    assert_three_loaders_agree(tmp_path / "saved", unwrap_timm(trainer.model.student).eval(), labels=labels)
    assert ltkd_hf.load_student(str(tmp_path / "saved")).num_classes == 6


def test_no_card_for_a_student_that_neither_trained_nor_was_saved(tmp_path):
    """create_model_card() before train() wrote a card of the untrained initialisation, its accuracies and "how the
    run was made" included, into a folder without weights."""
    trainer = make_trainer(make_config(tmp_path, max_steps=1), eval_dataset=SyntheticImages(8))
    with pytest.raises(ValueError, match=r"create_model_card\(\): the student has not trained \(no step\) and .* holds "
                                         r"no saved model"):
        trainer.create_model_card()
    assert not (tmp_path / "README.md").exists()
    # push_to_hub() saves first, so the folder then looked saved: random weights went up, with a card of a run
    with pytest.raises(ValueError, match=r"push_to_hub\(\): the student has not trained"):
        trainer.push_to_hub()
    assert not (tmp_path / "model.safetensors").exists()
    trainer.save_model()  # weights trained elsewhere, saved here: the card describes them
    trainer.create_model_card()
    assert ModelCard.load(tmp_path / "README.md").data.eval_results


def test_a_report_written_before_training_does_not_speak_for_the_trained_weights(tmp_path):
    """write_report() before train() kept its report in the trainer: the card after training took its accuracies
    over the new evaluation's, and its comparison table, so a pushed card showed the untrained model's numbers."""
    trainer = make_trainer(make_config(tmp_path, max_steps=2, learning_rate=0.3), eval_dataset=SyntheticImages(12))
    trainer.write_report()
    trainer.train()
    trainer.save_model()
    accuracy = trainer.evaluate()["eval_accuracy"]
    trainer.create_model_card()
    card = ModelCard.load(tmp_path / "README.md")
    overall = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
    assert overall.metric_value == pytest.approx(accuracy, abs=1e-12)
    assert "### Comparison" not in card.text  # the untrained model's table: write_report() again for the new one
    trainer.write_report()
    trainer.create_model_card()
    assert "### Comparison" in ModelCard.load(tmp_path / "README.md").text


def test_the_card_after_a_report_takes_its_numbers_without_a_second_pass(tmp_path):
    """create_model_card() after write_report() ran evaluate() over the test split again, for numbers the report's
    then replaced: a second pass as long as the report's (14 of a bf16 CPU stage's 20 s)."""
    trainer = make_trainer(make_config(tmp_path, max_steps=2), eval_dataset=SyntheticImages(12))
    trainer.train()
    trainer.save_model()
    report = trainer.write_report()[trainer.model_label]
    batches = []
    unwrap_timm(trainer.model.student).register_forward_hook(lambda module, args, out: batches.append(len(out)))
    trainer.create_model_card()
    assert batches == []  # the student saw no image
    card = ModelCard.load(tmp_path / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    keys = ("accuracy", "accuracy_head", "accuracy_medium", "accuracy_tail")
    assert {k: metrics[k] for k in keys} == {k: pytest.approx(report[k], abs=1e-12) for k in keys}
    # and they are these weights' numbers: evaluate() scores them on its own path (argmax of the logits, per group)
    evaluated = trainer.evaluate()
    assert batches  # evaluate() itself does run the student
    assert {k: metrics[k] for k in keys} == {k: pytest.approx(evaluated[f"eval_{k}"], abs=1e-12) for k in keys}


def test_a_report_is_reused_only_for_the_weights_rows_and_images_it_scored(tmp_path):
    """A finished stage run again scored its test split and drew its plots again every time (a re-run of a
    finished 18-cell table spent 54 s on it). write_report(reuse=True) returns report.json as it is when it scored
    these very weights; any difference scores again. A marker only the file holds tells which happened."""
    trainer = make_trainer(make_config(tmp_path, max_steps=2), eval_dataset=SyntheticImages(12))
    trainer.train()
    row, path = trainer.model_label, tmp_path / "report.json"
    first = trainer.write_report()
    assert list(first) == ["teacher", row]

    def mark() -> str:
        saved = json.loads(path.read_text())
        saved["models"][row]["accuracy"] = -1.0
        path.write_text(json.dumps(saved))
        return path.read_text()

    text = mark()
    reused = trainer.write_report(reuse=True)
    assert reused[row]["accuracy"] == -1.0 and path.read_text() == text  # nothing scored, nothing written
    assert trainer.report is reused  # and the card takes these rows
    others = {"student (CE)": first[row]}
    assert trainer.write_report(other_reports=others, reuse=True)[row]["accuracy"] == first[row]["accuracy"]
    mark()
    assert trainer.write_report(other_reports=others, reuse=True)[row]["accuracy"] == -1.0
    for change in ("student", "teacher", "images", "metadata"):
        mark()
        kwargs = {"other_reports": others, "reuse": True}
        if change == "images":
            kwargs["eval_dataset"] = SyntheticImages(8)
        elif change == "metadata":
            kwargs["metadata"] = {"training seed": 1}
        else:
            model = trainer.model.student if change == "student" else trainer.teacher
            with torch.no_grad():
                next(model.parameters()).add_(1.0)
        assert trainer.write_report(**kwargs)[row]["accuracy"] != -1.0, change
        assert json.loads(path.read_text())["models"][row]["accuracy"] != -1.0, change


def test_a_row_given_under_a_name_the_report_scores_itself_is_refused(tmp_path):
    """ltkd-distill --distill_loss ce passed its CE comparison student's row as "student (CE)", the student's own
    row name: the scored row replaced it, and the table showed one CE student of the two trained."""
    trainer = make_trainer(make_config(tmp_path, distill_loss="ce"), eval_dataset=SyntheticImages(12))
    other = trainer.write_report(name="student (CE, another run)")["student (CE, another run)"]
    for row in ("student (CE)", "teacher"):
        with pytest.raises(ValueError, match=rf"^other_reports has a row named '{re.escape(row)}', which this report "
                                             r"scores itself; name this model's row with name=\.\.\. or rename that "
                                             r"row\.$"):
            trainer.write_report(other_reports={row: other})
    rows = trainer.write_report(other_reports={"student (CE, another run)": other})
    assert list(rows) == ["teacher", "student (CE, another run)", "student (CE)"]
    assert rows["student (CE, another run)"] == other


def test_a_report_without_split_info_or_teacher_says_so_in_words(tmp_path):
    """A trainer given class counts, not split_info, wrote "- **dataset**: None" into report.md, and a run with no
    teacher "- **teacher**: None": Python's spelling, where the report means nothing was recorded or there is none."""
    trainer = make_trainer(make_config(tmp_path, distill_loss="ce"), teacher_model=None,
                           eval_dataset=SyntheticImages(12))
    trainer.write_report()
    facts = dict(re.findall(r"^- \*\*(.+?)\*\*: (.*)$", (tmp_path / "report.md").read_text(), re.M))
    assert facts["dataset"] == "not recorded"
    assert facts["training split"].startswith("not recorded")
    assert facts["teacher"] == "none"
    assert "None" not in "".join(facts.values())
    assert "caveats" not in facts  # said only when there is one


def test_the_report_and_the_card_state_the_data_caveats_they_are_given(tmp_path):
    """What the trainer cannot see in its datasets (here: test images that are copies of training ones) is stated
    beside the numbers it qualifies, in report.json, report.md and the card."""
    caveats = ["3 of the 12 test images are copies of train images, so their accuracy is not held out",
               "the test images were resized twice"]
    trainer = make_trainer(make_config(tmp_path, max_steps=1), eval_dataset=SyntheticImages(12), data_caveats=caveats)
    trainer.train()
    trainer.save_model()
    trainer.write_report()
    trainer.create_model_card()
    assert json.loads((tmp_path / "report.json").read_text())["metadata"]["caveats"] == caveats
    assert f"- **caveats**: {caveats[0]}; {caveats[1]}\n" in (tmp_path / "report.md").read_text()
    card = ModelCard.load(tmp_path / "README.md").text
    results, comparison = card.index("## Results"), card.index("### Comparison")
    assert results < card.index(f"**Caveats about these numbers:**\n\n- {caveats[0]}.\n- {caveats[1]}.\n") < comparison


def test_a_checkpoint_made_with_other_settings_is_not_resumed(tmp_path):
    make_trainer(make_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)).train()
    changed = make_trainer(make_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, ce_weight=0.5))
    with pytest.raises(ValueError, match=r"ce_weight \(objective.ce_weight\): 1.0 in .*checkpoint-2, 0.5 now"):
        changed.train(resume_from_checkpoint=True)
    with pytest.raises(FileNotFoundError, match="--resume_from_checkpoint '.*nowhere' is not a folder"):
        changed.train(resume_from_checkpoint=str(tmp_path / "nowhere"))


def test_resuming_the_last_checkpoint_trains_no_further(tmp_path):
    """transformers resumes a checkpoint taken at max_steps in the middle of an epoch for one more step; a finished
    run's last checkpoint is loaded and nothing else happens."""
    data = SyntheticImages(32)  # 4 steps an epoch: max_steps 2 ends mid-epoch
    config = make_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    make_trainer(config, train_dataset=data).train()
    saved = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    again = make_trainer(make_config(tmp_path, max_steps=2, save_strategy="steps", save_steps=1), train_dataset=data)
    again.train(resume_from_checkpoint=True)
    assert again.state.global_step == 2 and not (tmp_path / "checkpoint-3").exists()
    weights = unwrap_timm(again.model.student).state_dict()
    assert all(torch.equal(weights[k], v) for k, v in saved.items())


def test_a_checkpoint_of_the_model_alone_is_not_resumed(tmp_path):
    """transformers resumed a save_only_model checkpoint without a word, with a new optimizer, its schedule from
    the first step and fresh random states: the "resumed" student differed from the uninterrupted one (measured:
    by 0.006 after 2 of 4 steps). The finished run's last checkpoint needs none of them: it is loaded."""
    data = SyntheticImages(32)  # 4 steps an epoch: max_steps 4 ends with it

    def trainer():
        return make_trainer(make_config(tmp_path, max_steps=4, save_strategy="steps", save_steps=2,
                                        save_only_model=True), train_dataset=data)

    trainer().train()
    assert not list((tmp_path / "checkpoint-2").glob("rng_state*"))  # what save_only_model leaves out
    saved = load_file(tmp_path / "checkpoint-4" / "model.safetensors")
    again = trainer()
    again.train(resume_from_checkpoint=True)
    assert all(torch.equal(unwrap_timm(again.model.student).state_dict()[k], v) for k, v in saved.items())
    shutil.rmtree(tmp_path / "checkpoint-4")  # a run killed after its first checkpoint
    with pytest.raises(ValueError, match=r"checkpoint-2 holds the model's weights only \(saved with --save_only_model "
                                         r"true\): no optimizer, learning-rate schedule or random state"):
        trainer().train(resume_from_checkpoint=True)


def test_folders_are_written_from_the_state_trainer_hands_over(tmp_path):
    """Trainer's save hook gets the model's state (under FSDP or DeepSpeed the one they gather; the modules' own
    tensors are shards there): the folder holds that state's student tensors under timm names and no loss tensor;
    a checkpoint-N folder also holds the loss's (ReviewKD's fusion modules), and resuming loads that state back."""
    student, teacher, config = reviewkd_setup(tmp_path)
    trainer = make_trainer(config, model=student, teacher_model=teacher)
    own = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    handed = {k: v + 1 if v.is_floating_point() else v + 2 for k, v in own.items()}  # not the modules' tensors
    student_keys = set(unwrap_timm(student).state_dict())
    loss_keys = set(trainer.loss_fn.state_dict())
    assert loss_keys and not loss_keys & student_keys

    folder, checkpoint = tmp_path / "model", tmp_path / "checkpoint-3"
    for out in (folder, checkpoint):
        trainer._save(str(out), state_dict=handed)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "training_args.bin"]
    assert (checkpoint / "distill_loss.safetensors").is_file()
    for out in (folder, checkpoint):
        weights = load_file(out / "model.safetensors")
        assert set(weights) == student_keys
        for k, v in weights.items():
            assert torch.equal(v, handed[f"student.timm_model.{k}"]), k
    loss = load_file(checkpoint / "distill_loss.safetensors")
    assert set(loss) == loss_keys and all(torch.equal(v, handed[f"distill_loss.{k}"]) for k, v in loss.items())

    trainer._load_from_checkpoint(str(checkpoint))
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, handed[k]) and not torch.equal(v, own[k]), k


def test_a_checkpoint_a_kill_cut_short_is_not_the_one_resumed(tmp_path):
    """get_last_checkpoint picks the highest-numbered folder, finished or not; Trainer writes trainer_state.json last."""
    from ltkd_hf.run_artefacts import checkpoints

    for step, state in ((1, "{}"), (2, None), (9, "{}"), (10, '{"global'), (11, "{}")):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-11").rename(tmp_path / "checkpoint-11-old")  # not a checkpoint folder's name
    complete, cut_short = checkpoints(tmp_path)
    assert [p.name for p in complete] == ["checkpoint-1", "checkpoint-9"]
    assert [p.name for p in cut_short] == ["checkpoint-2", "checkpoint-10"]
    trainer = make_trainer(make_config(tmp_path, save_strategy="steps", save_steps=1))
    with pytest.raises(ValueError, match=rf"{tmp_path}/checkpoint-9 holds .* records no settings"):  # the last whole one
        trainer.train(resume_from_checkpoint=True)
