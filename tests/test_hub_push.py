"""Push a student to a fake Hub on 127.0.0.1, download it back, and load it with identical logits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from huggingface_hub import constants

from hub_server import FakeHub  # the fake_hub fixture lives in conftest.py
from ltkd_hf import ClassGroups, SplitInfo
from ltkd_hf.hub import check_push_to_hub_ready, load_student, push_student, render_model_card, save_student
from ltkd_hf.hub import write_model_card

LABELS = ["head_cls", "mid_cls", "tail_cls"]


def _student_folder(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(3)
    model = timm.create_model("test_vit", num_classes=len(LABELS)).eval()
    folder = save_student(model, tmp_path / "student", label_names=LABELS, extra_config={"ltkd": {"loss": "ltkd"}})
    info = SplitInfo([30, 20, 10], LABELS, "uoft-cs/cifar100", "hub", "train", "test")
    card = render_model_card(
        model_name="alice/tiny-ltkd", architecture="test_vit", teacher="alice/teacher", split_info=info,
        groups=ClassGroups.from_counts(info.class_counts), loss_name="ltkd",
        results={"accuracy": 0.1, "accuracy_head": 0.2, "accuracy_medium": 0.3, "accuracy_tail": 0.4},
    )
    write_model_card(folder, card)
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"not for the hub")
    return folder, model


def test_push_then_download_and_load_in_timm(fake_hub: FakeHub, tmp_path: Path) -> None:
    folder, model = _student_folder(tmp_path)
    url = push_student(folder, "alice/tiny-ltkd", token=fake_hub.token, private=True, commit_message="first")
    repo = fake_hub.repos["alice/tiny-ltkd"]
    assert url == f"{fake_hub.url}/alice/tiny-ltkd/commit/{repo.head}"
    assert repo.private
    # exactly the model files went up, byte for byte; trainer checkpoints and staging folders stayed home
    assert sorted(repo.files) == ["README.md", "config.json", "model.safetensors"]
    for name, data in repo.files.items():
        assert data == (folder / name).read_bytes()
    # every request carried the token
    assert all(auth == f"Bearer {fake_hub.token}" for method, _, auth in fake_hub.requests if method == "POST")

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
        from_hub = timm.create_model("hf-hub:alice/tiny-ltkd", pretrained=True).eval()
        assert torch.equal(from_hub(x), expected)
        assert torch.equal(load_student("alice/tiny-ltkd")(x), expected)
        assert torch.equal(load_student(f"hf-hub:alice/tiny-ltkd@{repo.head}")(x), expected)
    downloaded = Path(huggingface_hub.hf_hub_download("alice/tiny-ltkd", "config.json"))
    assert json.loads(downloaded.read_text())["label_names"] == LABELS
    assert str(downloaded).startswith(str(tmp_path / "hub-cache"))  # really fetched from the fake Hub


def test_second_push_updates_existing_repo(fake_hub: FakeHub, tmp_path: Path) -> None:
    folder, _ = _student_folder(tmp_path)
    push_student(folder, "alice/tiny-ltkd", token=fake_hub.token)
    first_commit = fake_hub.repos["alice/tiny-ltkd"].head
    torch.manual_seed(9)
    retrained = timm.create_model("test_vit", num_classes=len(LABELS)).eval()
    save_student(retrained, folder, label_names=LABELS)
    push_student(folder, "alice/tiny-ltkd", token=fake_hub.token)  # create_repo answers 409: exist_ok
    repo = fake_hub.repos["alice/tiny-ltkd"]
    assert repo.head != first_commit
    assert repo.files["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_push_to_a_branch_creates_it_once(fake_hub: FakeHub, tmp_path: Path) -> None:
    """push_student could push only to main; as trainer.push_to_hub(revision=...) it creates the branch it needs."""
    folder, _ = _student_folder(tmp_path)
    for _ in range(2):  # the second push finds the branch there
        push_student(folder, "alice/branched", token=fake_hub.token, revision="seed-1")
    repo = fake_hub.repos["alice/branched"]
    assert repo.branches == {"main", "seed-1"} and repo.committed_to == ["seed-1", "seed-1"]


def test_a_repo_name_without_owner_goes_to_the_tokens_namespace(fake_hub: FakeHub, tmp_path: Path) -> None:
    folder, _ = _student_folder(tmp_path)
    url = push_student(folder, "tiny-ltkd", token=fake_hub.token)
    repo = fake_hub.repos["alice/tiny-ltkd"]  # where the Hub creates it, and where the files went
    assert url == f"{fake_hub.url}/alice/tiny-ltkd/commit/{repo.head}" and "model.safetensors" in repo.files


def test_token_comes_from_hf_token_env(fake_hub: FakeHub, tmp_path: Path, monkeypatch) -> None:
    folder, _ = _student_folder(tmp_path)
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    push_student(folder, "alice/from-env")
    assert "alice/from-env" in fake_hub.repos


def test_push_needs_a_saved_folder(fake_hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks \['config.json', 'model.safetensors'\].*save_student"):
        push_student(tmp_path / "empty", "alice/x", token=fake_hub.token)
    assert fake_hub.requests == []


def test_check_push_to_hub_ready_without_token_says_how_to_get_one(fake_hub: FakeHub, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # the saved-login path is resolved from HF_HOME when huggingface_hub is imported; follow it here
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    with pytest.raises(ValueError, match=r"repo_id='alice/x'.*--hub_token.*HF_TOKEN.*`hf auth login`"):
        check_push_to_hub_ready("alice/x")

    # each source of the token in turn: the Hub accepts only the one expected, so the check asked it with that one
    (tmp_path / "hf-home").mkdir()
    (tmp_path / "hf-home" / "token").write_text("hf_saved_login\n")
    fake_hub.server.token = "hf_saved_login"
    assert check_push_to_hub_ready("alice/x") == "hf_saved_login"
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    fake_hub.server.token = "hf_from_env"
    assert check_push_to_hub_ready("alice/x") == "hf_from_env"
    fake_hub.server.token = "hf_explicit"
    assert check_push_to_hub_ready("alice/x", token="hf_explicit") == "hf_explicit"
    with pytest.raises(ValueError, match=r"--hub_token: .* refused the token \(HTTP 401\)"):
        check_push_to_hub_ready("alice/x", token="hf_wrong")


def test_push_is_refused_offline_and_outside_the_tokens_namespaces(fake_hub: FakeHub, monkeypatch) -> None:
    assert check_push_to_hub_ready("ltkd-org/x", token=fake_hub.token) == fake_hub.token  # an organisation of alice
    with pytest.raises(ValueError, match=r"--hub_model_id bob/x: the token belongs to 'alice'"):
        check_push_to_hub_ready("bob/x", token=fake_hub.token)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"--push_to_hub true \(repo 'alice/x'\), but offline mode is on"):
        check_push_to_hub_ready("alice/x", token=fake_hub.token)
    assert [path for _, path, _ in fake_hub.requests] == ["/api/whoami-v2", "/api/whoami-v2"]  # none when offline


def test_an_unreachable_endpoint_is_one_connection_error(fake_hub: FakeHub, monkeypatch) -> None:
    """huggingface_hub's transport raises its HTTP library's own errors (httpx's ConnectError is no OSError): the
    push check let it through as a traceback before training."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    with pytest.raises(ConnectionError, match=rf"--push_to_hub true: cannot reach {closed} to check the token \("):
        check_push_to_hub_ready("alice/x", token=fake_hub.token)


@pytest.mark.parametrize("repo_id", ["alice/x/y", "alice/bad name", "", "alice/--x"])
def test_check_push_to_hub_ready_rejects_bad_repo_ids(repo_id: str) -> None:
    with pytest.raises(ValueError, match=rf"repo_id={re.escape(repr(repo_id))} is not a valid Hub repo id"):
        check_push_to_hub_ready(repo_id, token="hf_x")
