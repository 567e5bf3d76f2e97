"""`automlm-push` against a fake Hub: what would be sent, what is refused, and that the token never shows."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

from model_card import code_files, missing_files, push_to_hub, upload_files
from model_card.cli import push_main
from tests.model_card.conftest import write_json

FAKE_TOKEN = "hf_FAKEtoken1234567890abcdefSECRET"
REPO_ID = "org/automlm-tiny"
AUTO_MAP = {
    "AutoConfig": "configuration_automlm.AutoMLMConfig",
    "AutoModel": "modeling_automlm.AutoMLMModel",
    "AutoModelForPreTraining": "modeling_automlm.AutoMLMForPreTraining",
}


def real_signature(name: str, *args, **kwargs) -> None:
    """Raise TypeError, as the real `HfApi` would, for an argument its method `name` does not take: a renamed or
    misspelled argument fails here, not only on the Hub."""
    inspect.signature(getattr(huggingface_hub.HfApi, name)).bind(None, *args, **kwargs)


class FakeHfApi:
    """Stands in for `huggingface_hub.HfApi`: records every call, sends nothing, and takes only the arguments the
    real methods take."""

    calls: list[tuple[str, dict]] = []
    fail_with: Exception | None = None

    def __init__(self, token=None, **kwargs):
        real_signature("__init__", token=token, **kwargs)
        self.calls.append(("__init__", {"token": token, **kwargs}))

    def create_repo(self, repo_id, **kwargs):
        real_signature("create_repo", repo_id, **kwargs)
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        real_signature("create_branch", repo_id, **kwargs)
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        real_signature("upload_folder", **kwargs)
        self.calls.append(("upload_folder", kwargs))
        if self.fail_with is not None:
            # A careless library could log or echo the token: the CLI must still not show it.
            logging.getLogger("huggingface_hub").warning("request failed with Authorization: Bearer %s", FAKE_TOKEN)
            raise self.fail_with
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")

    @classmethod
    def names(cls) -> list[str]:
        return [name for name, _ in cls.calls]

    @classmethod
    def call(cls, name: str) -> dict:
        return next(kwargs for called, kwargs in cls.calls if called == name)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    FakeHfApi.calls = []
    FakeHfApi.fail_with = None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    # No stored login and no token in the environment: tests never see a real token.
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    return FakeHfApi


@pytest.fixture
def complete_dir(tmp_path) -> Path:
    """A complete custom-code export, written by hand (push reads only file names and config.json)."""
    folder = tmp_path / "automlm-tiny"
    folder.mkdir()
    write_json(folder / "config.json", {"model_type": "automlm", "auto_map": AUTO_MAP})
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    write_json(folder / "tokenizer.json", {})
    write_json(folder / "tokenizer_config.json", {})
    write_json(folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": "Transformer"}])
    (folder / "README.md").write_text(f"---\nlicense: apache-2.0\n---\n# {REPO_ID}\n")
    (folder / "configuration_automlm.py").write_text("from transformers import PreTrainedConfig\n")
    (folder / "modeling_automlm.py").write_text(
        "from .configuration_automlm import AutoMLMConfig\nfrom .masking import mask_tokens\n"
    )
    (folder / "masking.py").write_text("import torch\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "masking.cpython-311.pyc").write_bytes(b"\0")
    return folder


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert FAKE_TOKEN not in text
        assert FAKE_TOKEN[5:20] not in text  # not even a slice of it


def test_code_files_follow_relative_imports(complete_dir):
    config = json.loads((complete_dir / "config.json").read_text())
    assert code_files(complete_dir, config) == ["configuration_automlm.py", "modeling_automlm.py", "masking.py"]
    assert code_files(complete_dir, {"auto_map": {"AutoModel": "org/repo--modeling_x.X"}}) == []


def test_complete_folder_passes_the_check(complete_dir):
    assert missing_files(complete_dir) == []
    assert "__pycache__/masking.cpython-311.pyc" not in upload_files(complete_dir)


def test_dry_run_lists_files_and_sends_nothing(complete_dir, fake_hub, capsys):
    assert push_main([str(complete_dir), "--repo-id", REPO_ID, "--dry-run"]) == 0
    out = capsys.readouterr().out
    expected = [
        "README.md", "config.json", "configuration_automlm.py", "masking.py", "model.safetensors",
        "modeling_automlm.py", "modules.json", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    for name in expected:
        assert f"  {name}  (" in out
    assert "__pycache__" not in out
    assert fake_hub.calls == []  # no client was even created
    assert push_to_hub(complete_dir, REPO_ID, dry_run=True) == expected


def test_push_sends_repo_id_private_revision_and_message(complete_dir, fake_hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    argv = [str(complete_dir), "--repo-id", REPO_ID, "--private", "--revision", "v1", "--commit-message", "First"]
    assert push_main([*argv, "--token", FAKE_TOKEN]) == 0
    assert fake_hub.names() == ["__init__", "create_repo", "create_branch", "upload_folder"]
    assert fake_hub.call("__init__")["token"] == FAKE_TOKEN
    assert fake_hub.call("create_repo") == {
        "repo_id": REPO_ID, "private": True, "exist_ok": True, "repo_type": "model"
    }  # fmt: skip
    assert fake_hub.call("create_branch")["branch"] == "v1"
    upload = fake_hub.call("upload_folder")
    assert upload["repo_id"] == REPO_ID
    assert Path(upload["folder_path"]) == complete_dir
    assert upload["revision"] == "v1"
    assert upload["commit_message"] == "First"
    assert "*.pyc" in upload["ignore_patterns"]
    captured = capsys.readouterr()
    assert "commit/abc123" in captured.out
    assert_no_token(captured.out, captured.err, caplog.text)


def test_push_defaults_and_token_from_environment(complete_dir, fake_hub, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    url = push_to_hub(complete_dir, REPO_ID)
    assert url.endswith("commit/abc123")
    assert fake_hub.names() == ["__init__", "create_repo", "upload_folder"]  # no branch for main
    assert fake_hub.call("__init__")["token"] == FAKE_TOKEN
    assert fake_hub.call("create_repo")["private"] is False
    assert fake_hub.call("upload_folder")["revision"] is None
    captured = capsys.readouterr()
    assert_no_token(captured.out, captured.err, caplog.text)


def test_token_is_redacted_from_errors_and_logs(complete_dir, fake_hub, monkeypatch, capsys, caplog):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    fake_hub.fail_with = RuntimeError(f"401 Unauthorized for token {FAKE_TOKEN}")
    with pytest.raises(SystemExit) as exit_info:
        push_main([str(complete_dir), "--repo-id", REPO_ID])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "401 Unauthorized" in captured.err and "<redacted>" in captured.err
    assert_no_token(captured.out, captured.err, caplog.text)
    assert "<redacted>" in caplog.text


def test_no_token_is_refused_before_any_call(complete_dir, fake_hub):
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_to_hub(complete_dir, REPO_ID)
    assert fake_hub.calls == []


def test_incomplete_folder_is_refused_naming_each_missing_file(complete_dir, fake_hub, capsys):
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md", "masking.py"):
        (complete_dir / name).unlink()
    with pytest.raises(SystemExit) as exit_info:
        push_main([str(complete_dir), "--repo-id", REPO_ID, "--token", FAKE_TOKEN])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    for needed in ("model.safetensors", "tokenizer.json", "README.md", "automlm-card", "masking.py"):
        assert needed in err
    assert "configuration_automlm.py" not in err  # present, so not reported
    assert fake_hub.calls == []
    with pytest.raises(FileNotFoundError, match=r"masking\.py"):
        push_to_hub(complete_dir, REPO_ID, dry_run=True)  # a dry run checks too


def test_plain_export_needs_no_code_but_its_modules(complete_dir):
    for name in ("configuration_automlm.py", "modeling_automlm.py", "masking.py"):
        (complete_dir / name).unlink()
    # masking.py is imported by modeling_automlm.py, so it cannot be found missing until that file is back.
    assert [m.split()[0] for m in missing_files(complete_dir)] == ["configuration_automlm.py", "modeling_automlm.py"]
    write_json(complete_dir / "config.json", {"model_type": "bert"})  # no auto_map: stock architecture
    assert missing_files(complete_dir) == []
    write_json(complete_dir / "modules.json", [{"path": ""}, {"name": "1", "path": "1_Pooling"}])
    assert missing_files(complete_dir) == ["1_Pooling/ (module 1 of modules.json)"]
    (complete_dir / "modules.json").unlink()
    assert missing_files(complete_dir) == ["modules.json (sentence-transformers configuration)"]


def test_real_export_is_complete_once_it_has_a_card(make_model, tokenizer, tmp_path):
    from model_card import generate_model_card
    from training.export import export_sentence_transformers

    export_sentence_transformers(make_model(), tokenizer, tmp_path)
    assert missing_files(tmp_path) == [f"README.md (write the model card with `automlm-card {tmp_path}`)"]
    generate_model_card(tmp_path)
    assert missing_files(tmp_path) == []
    assert {"configuration_automlm.py", "modeling_automlm.py", "masking.py"} <= set(upload_files(tmp_path))


def test_the_fake_hub_refuses_an_argument_the_real_one_does_not_take():
    with pytest.raises(TypeError):
        FakeHfApi().upload_folder(repo_id=REPO_ID, folder_path=".", commit_msg="renamed")
    with pytest.raises(TypeError):
        FakeHfApi().create_repo(REPO_ID, privte=True)
