"""label_smoothing_factor smooths the student's training cross-entropy (plain and logit-adjusted); evaluation's CE
stays plain. The reference is the smoothed target written out: (1 - eps) on the label plus eps / C on every class."""

from __future__ import annotations

import pytest
import torch

from tiny_setup import CLASS_COUNTS, NUM_CLASSES, SyntheticImages, make_config, make_student, make_trainer


@pytest.mark.parametrize("distill_loss,tau", [("ltkd", 0.0), ("ce", 1.0)])
def test_label_smoothing_reaches_the_training_cross_entropy(tmp_path, distill_loss, tau):
    eps = 0.2
    student, data = make_student(), SyntheticImages(8)
    config = make_config(tmp_path, max_steps=1, learning_rate=0.0, per_device_train_batch_size=8,
                         distill_loss=distill_loss, ce_logit_adjustment=tau, label_smoothing_factor=eps)
    teacher = {"teacher_model": None} if distill_loss == "ce" else {}
    trainer = make_trainer(config, model=student, train_dataset=data, eval_dataset=data, **teacher)
    trainer.train()

    with torch.no_grad():  # lr 0: the student as it was during the step
        logits = student.eval()(pixel_values=data.images).logits.double()
    prior = torch.tensor(CLASS_COUNTS, dtype=torch.float64) / sum(CLASS_COUNTS)
    log_p = (logits + tau * prior.log()).log_softmax(dim=1)
    target = torch.full_like(log_p, eps / NUM_CLASSES)
    target[torch.arange(len(data)), data.labels] += 1 - eps
    expected = -(target * log_p).sum(dim=1).mean().item()
    unsmoothed = -log_p.gather(1, data.labels[:, None]).mean().item()
    assert abs(expected - unsmoothed) > 1e-3  # the check has power: smoothing moves the term ~100x the tolerance
    # float32 log-softmax of O(1) logits against float64: a few eps (1.2e-7) apart
    assert trainer.state.log_history[0]["ce"] == pytest.approx(expected, rel=1e-5, abs=1e-6)

    plain = torch.nn.functional.cross_entropy(logits, data.labels).item()
    assert trainer.evaluate()["eval_ce"] == pytest.approx(plain, rel=1e-5, abs=1e-6)
