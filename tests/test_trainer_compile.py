"""The compile path (torch_compile: student by Trainer, teacher by us) on CPU: dynamo traces both models and
the first step's terms equal the eager run's. The GPU fast path (inductor, CUDA graphs) is measured in
benchmarks/trainer_speed.py on a GPU machine; aot_eager exercises the same tracing here in seconds."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from tiny_setup import make_config, make_trainer


def test_compiled_student_and_teacher_match_eager(tmp_path):
    logs = {}
    for compiled in (False, True):
        # transformers turns torch_compile on whenever a backend is named: name it for the compiled run only
        config = make_config(tmp_path / str(compiled), max_steps=1, learning_rate=0.0, torch_compile=compiled,
                             torch_compile_backend="aot_eager" if compiled else None)
        trainer = make_trainer(config)
        torch._dynamo.reset()  # traced afresh here, not taken from an earlier test's compiled code
        counters.clear()
        trainer.train()
        # both models really went through torch.compile, or neither did
        assert (type(trainer.teacher).__name__ == "OptimizedModule") == compiled
        assert hasattr(trainer.model_wrapped, "_orig_mod") == compiled
        # ... whole: the LTKD loss is traced into the student's graph, not run eagerly between two graphs
        assert counters["frames"]["ok"] > 0 if compiled else not counters["frames"]
        assert not counters["graph_break"], list(counters["graph_break"])
        logs[compiled] = trainer.state.log_history[0]
    for key in ("ce", "cross_group", "within_group", "distill", "loss"):
        # traced graphs may decompose ops: float32 terms of O(1-10) logits move by a few eps (1.2e-7) of those
        assert logs[True][key] == pytest.approx(logs[False][key], rel=1e-5, abs=1e-6), key
