import os

# Every test runs offline: nothing may reach the Hub. Set before huggingface_hub is imported (it reads them then).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from transformers.utils import hub as transformers_hub  # noqa: E402

from hub_server import FakeHub  # noqa: E402

# Under pytest-xdist each worker gets its share of the cores: two workers each spinning every core's thread
# slow each other down several times over.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


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
