"""Building from a backbone, padding invariance, and save/load with and without the installed package."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining, GPT2Config, GPT2Model

from modeling_automlm import AutoMLMForPreTraining, AutoMLMModel
from tests.conftest import tiny_encoder_config

BACKBONES = ["bert", "xlm-roberta", "distilbert", "modernbert"]


@pytest.fixture
def backbone_dir(tmp_path, tokenizer):
    def make(model_type: str):
        folder = tmp_path / model_type
        torch.manual_seed(1)
        AutoModel.from_config(tiny_encoder_config(model_type, len(tokenizer), tokenizer.pad_token_id)).save_pretrained(
            folder
        )
        tokenizer.save_pretrained(folder)
        return folder

    return make


@pytest.mark.parametrize("model_type", BACKBONES)
def test_from_backbone_copies_weights_and_special_tokens(backbone_dir, tokenizer, model_type):
    folder = backbone_dir(model_type)
    model = AutoMLMForPreTraining.from_backbone(str(folder), pooling="cls", auto_mlm_weight=0.2)
    reference = AutoModel.from_pretrained(folder)
    ours = model.automlm.encoder.state_dict()
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(ours[name], tensor, msg=name)
    assert model.config.mask_token_id == tokenizer.mask_token_id
    assert tokenizer.mask_token_id not in model.config.special_token_ids
    assert tokenizer.cls_token_id in model.config.special_token_ids
    assert model.config.pooling == "cls" and model.config.auto_mlm_weight == 0.2
    assert model.config.encoder_config.model_type == model_type


def test_from_backbone_rejects_a_decoder_only_model(tmp_path, tokenizer):
    GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a bidirectional encoder"):
        AutoMLMForPreTraining.from_backbone(str(tmp_path))


def test_from_backbone_rejects_a_tokenizer_without_mask_token(backbone_dir, tokenizer):
    folder = backbone_dir("bert")
    no_mask = type(tokenizer).from_pretrained(folder)
    no_mask.mask_token = None
    with pytest.raises(ValueError, match="mask_token_id"):
        AutoMLMForPreTraining.from_backbone(str(folder), tokenizer=no_mask)
    # CL alone does not need it.
    AutoMLMForPreTraining.from_backbone(str(folder), tokenizer=no_mask, auto_mlm_weight=0.0)


@pytest.mark.parametrize("model_type", BACKBONES)
@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_padding_does_not_change_the_embedding(make_config, tokenizer, sentences, model_type, pooling):
    model = AutoMLMModel(make_config(model_type, pooling=pooling)).eval()
    alone = tokenizer(sentences[:1], return_tensors="pt")
    padded = tokenizer([sentences[0], sentences[2] + " " + sentences[12]], padding=True, return_tensors="pt")
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1]
    with torch.no_grad():
        a = model(**alone).sentence_embedding[0]
        b = model(**padded).sentence_embedding[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a.norm().item() == pytest.approx(1.0, abs=1e-5)


FRESH_PROCESS = textwrap.dedent(
    """
    import sys, json, torch
    sys.modules["modeling_automlm"] = None  # the package is NOT importable in this process
    try:
        import modeling_automlm  # noqa
        raise SystemExit("modeling_automlm should not be importable here")
    except ImportError:
        pass
    from transformers import AutoModel, AutoModelForPreTraining
    folder, ids, mask = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    base = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    full = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
    assert "transformers_modules" in type(base).__module__, type(base).__module__
    with torch.no_grad():
        a = base(input_ids=ids, attention_mask=mask).sentence_embedding
        b = full.automlm(input_ids=ids, attention_mask=mask).sentence_embedding
        torch.manual_seed(0)
        loss = full(input_ids=ids, attention_mask=mask).loss
    print(json.dumps({"base": a.tolist(), "full": b.tolist(), "loss": loss.item(), "cls": type(full).__name__}))
    """
)


@pytest.mark.slow
def test_saved_folder_loads_with_remote_code_in_a_fresh_process(make_model, batch, tmp_path):
    model = make_model(mlm_weight=0.5, head_fusion="concat").eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForPreTraining"}
    for name in ("configuration_automlm.py", "modeling_automlm.py", "masking.py"):
        assert (tmp_path / name).exists(), name
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(tmp_path),
            json.dumps(batch["input_ids"].tolist()),
            json.dumps(batch["attention_mask"].tolist()),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        expected = model.automlm(**batch).sentence_embedding
        torch.manual_seed(0)
        expected_loss = model(**batch).loss.item()
    torch.testing.assert_close(torch.tensor(loaded["base"]), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(loaded["full"]), expected, atol=1e-6, rtol=1e-5)
    assert loaded["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert loaded["cls"] == "AutoMLMForPreTraining"


def test_installed_package_loads_without_the_flag(make_model, batch, tmp_path):
    model = make_model().eval()
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    full = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(base) is AutoMLMModel and type(full) is AutoMLMForPreTraining
    with torch.no_grad():
        torch.testing.assert_close(base(**batch).sentence_embedding, model.automlm(**batch).sentence_embedding)
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(full.state_dict()[name], tensor, msg=name)


def test_from_backbone_builds_from_a_config_and_continues_an_automlm_folder(make_model, tokenizer, tmp_path):
    """The one constructor also takes an encoder config (from scratch) and an Auto-MLM folder (continued)."""
    encoder_config = tiny_encoder_config("bert", len(tokenizer), tokenizer.pad_token_id)
    scratch = AutoMLMForPreTraining.from_backbone(encoder_config, tokenizer, pooling="max")
    assert scratch.config.encoder_config.hidden_size == 32 and scratch.config.pooling == "max"
    assert scratch.config.mask_token_id == tokenizer.mask_token_id
    with pytest.raises(ValueError, match="tokenizer"):
        AutoMLMForPreTraining.from_backbone(encoder_config)

    trained = make_model(auto_mlm_weight=0.1)
    trained.save_pretrained(tmp_path)
    continued = AutoMLMForPreTraining.from_backbone(str(tmp_path), tokenizer, auto_mlm_weight=0.3, mlm_weight=0.2)
    assert (continued.config.auto_mlm_weight, continued.config.mlm_weight) == (0.3, 0.2)
    for name, tensor in trained.automlm.state_dict().items():
        torch.testing.assert_close(continued.automlm.state_dict()[name], tensor, msg=name)


def test_installed_backbone_resolvers_supply_a_local_copy(backbone_dir, tokenizer, monkeypatch):
    """A Hub id that cannot be loaded (HF_HUB_OFFLINE=1, not cached) is replaced by what a resolver supplies; the
    resolution lives in the trainer (`training.model`), not in the modeling file an exported model ships."""
    import modeling_automlm.modeling_automlm as modeling
    import training.model as resolution

    assert not hasattr(modeling, "entry_points") and not hasattr(modeling, "resolve_backbone")
    folder = backbone_dir("bert")
    calls = []

    def resolver(name, *, hub_unreachable):
        calls.append((name, hub_unreachable))
        return str(folder) if name == "automlm-tests/offline-only" and hub_unreachable else name

    class EntryPoint:
        def load(self):
            return resolver

    monkeypatch.setattr(
        resolution, "entry_points", lambda group: [EntryPoint()] if group == resolution.BACKBONE_RESOLVERS else []
    )
    assert resolution.resolve_backbone("automlm-tests/other") == "automlm-tests/other"
    assert resolution.resolve_backbone(str(folder)) == str(folder)  # a local folder is never swapped
    model = AutoMLMForPreTraining.from_backbone(resolution.resolve_backbone("automlm-tests/offline-only"))
    expected = AutoModel.from_pretrained(folder).state_dict()
    for name, value in model.automlm.encoder.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    assert ("automlm-tests/offline-only", False) in calls and ("automlm-tests/offline-only", True) in calls
    monkeypatch.setattr(resolution, "entry_points", lambda group: [])
    with pytest.raises(OSError):
        AutoMLMForPreTraining.from_backbone(resolution.resolve_backbone("automlm-tests/offline-only"))
