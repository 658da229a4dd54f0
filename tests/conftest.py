import gc
import json
import os

# Every test runs offline: nothing may reach the Hub. Set before huggingface_hub is imported (it reads them then).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from timm.models import save_for_hf  # noqa: E402
from transformers.utils import hub as transformers_hub  # noqa: E402

from hub_server import FakeHub  # noqa: E402
from launch import TESTS, torchrun  # noqa: E402

# Under pytest-xdist each worker gets its share of the cores: two workers each spinning every core's thread
# slow each other down several times over.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_collection_finish(session):
    """Move what the imports and the collection made (about half a million objects of torch, transformers, timm
    and the test modules) out of the garbage collector's sight: every Trainer.train() runs a full gc.collect()
    (accelerate's free_memory), which walked all of them (0.3 s a call here). In a 3-cell ltkd-table run the
    collector's time went from 1.16 s to 0.61 s."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items):
    """Heavy files first, each file's tests kept together and in order: with the long files handed out last, one
    worker went on alone for minutes after the other had finished."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A running fake Hub that huggingface_hub (and timm's hf-hub: through it) talks to, online for this test."""
    with FakeHub(max_seconds=900) as hub:  # a recipe checks the token, trains, then pushes
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        # huggingface_hub reads these at import time; point the already-imported module at the fake Hub
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        # Trainer.push_to_hub goes through transformers' shared HfApi, which keeps the endpoint of its first use:
        # drop it so this test's Hub is not an earlier test's, closed, port.
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
        yield hub


@pytest.fixture(scope="session")
def vit_checkpoint(tmp_path_factory) -> Path:
    """A "pretrained" ViT folder as timm.models.save_for_hf writes a Hub checkpoint: timm's test_vit (LayerNorm
    only) at 32 px with 8-px patches (16 tokens + the class token), 3 classes (so the student gets a new
    6-class head); its model_args say 32 px (save_for_hf keeps the registered 160 px in pretrained_cfg)."""
    folder = tmp_path_factory.mktemp("vit-start")
    torch.manual_seed(5)
    vit = timm.create_model("test_vit", img_size=32, patch_size=8, num_classes=3)
    save_for_hf(vit, folder, safe_serialization=True, model_args={"img_size": 32, "patch_size": 8})
    return folder


@dataclass
class TwoProcessRun:
    root: Path  # what each job wrote (two_process_jobs.py lists it)
    stderr: str  # the launch's log


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory, worker_id, vit_checkpoint) -> TwoProcessRun:
    """tests/two_process_jobs.py under torchrun, 2 CPU processes: every two-process check's run, in one launch per
    pytest run. Under pytest-xdist the first worker to need it launches it and the others wait for its files (the
    run's shared temporary folder and a file lock, as pytest-xdist's documentation does it); a failed launch is
    recorded too, so every worker reports that failure instead of launching again into its half-written folder."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root, record = shared / "two-processes", shared / "two-processes.json"
    with FileLock(str(shared / "two-processes.lock")):
        if not record.is_file():
            root.mkdir()
            proc = torchrun(TESTS / "two_process_jobs.py", root, vit_checkpoint, timeout=600)
            record.write_text(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}))
    launch = json.loads(record.read_text())
    assert launch["returncode"] == 0, f"torchrun failed:\n{launch['stdout'][-2000:]}\n{launch['stderr'][-4000:]}"
    return TwoProcessRun(root, launch["stderr"])
