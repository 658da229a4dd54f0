"""The compile path (torch_compile: student by Trainer, teacher by us) on CPU: dynamo traces both models and
the first step's terms equal the eager run's. The GPU fast path (inductor, CUDA graphs) is measured in
benchmarks/trainer_speed.py on a GPU machine; aot_eager exercises the same tracing here in seconds."""

from __future__ import annotations

import pytest

from tiny_setup import make_config, make_trainer


def test_compiled_student_and_teacher_match_eager(tmp_path):
    logs = {}
    for compiled in (False, True):
        config = make_config(tmp_path / str(compiled), max_steps=1, learning_rate=0.0, torch_compile=compiled,
                             torch_compile_backend="aot_eager")
        trainer = make_trainer(config)
        trainer.train()
        if compiled:  # both models really went through torch.compile
            assert type(trainer.teacher).__name__ == "OptimizedModule"
            assert type(trainer.model_wrapped).__name__ == "OptimizedModule" or hasattr(trainer.model_wrapped, "_orig_mod")
        logs[compiled] = trainer.state.log_history[0]
    for key in ("ce", "cross_group", "within_group", "distill", "loss"):
        # traced graphs may decompose ops: float32 terms of O(1-10) logits move by a few eps (1.2e-7) of those
        assert logs[True][key] == pytest.approx(logs[False][key], rel=1e-5, abs=1e-6), key
