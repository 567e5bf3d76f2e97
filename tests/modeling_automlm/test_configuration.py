import json

import pytest
from transformers import AutoConfig, GPT2Config

from modeling_automlm import AutoMLMConfig, AutoMLMModel
from modeling_automlm.configuration_automlm import AUTO_MAP


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("pooling", "first", "`pooling` must be one of"),
        ("masking_scheme", "span", "`masking_scheme` must be one of"),
        ("mask_replacement", "zeros", "`mask_replacement` must be one of"),
        ("head_fusion", "multiply", "`head_fusion` must be one of"),
        ("head_input", "hidden", "`head_input` must be one of"),
        ("contrastive_temperature", 0.0, "`contrastive_temperature` must be a number in (0.0"),
        ("mask_probability", 1.5, "`mask_probability` must be a number in (0.0, 1.0]"),
        ("auto_mlm_weight", -1.0, "`auto_mlm_weight` must be a number in [0.0"),
        ("head_num_layers", -1, "`head_num_layers` must be an integer >= 0"),
        ("head_vocab_sample_size", -1, "`head_vocab_sample_size` must be an integer >= 0 (0: score the whole"),
        ("head_vocab_sample_size", 8192.0, "`head_vocab_sample_size` must be an integer >= 0"),
        ("head_vocab_sample_size", True, "`head_vocab_sample_size` must be an integer >= 0"),
        ("normalize_embeddings", "yes", "`normalize_embeddings` must be True or False"),
    ],
)
def test_invalid_field_is_named(make_config, field, value, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        make_config(**{field: value})


def test_prepend_needs_a_layer(make_config):
    with pytest.raises(ValueError, match="head_fusion='prepend'"):
        make_config(head_num_layers=0, head_fusion="prepend")
    assert make_config(head_num_layers=0, head_fusion="add").head_num_layers == 0


def test_all_weights_zero_is_rejected(make_config):
    with pytest.raises(ValueError, match="At least one of"):
        make_config(contrastive_weight=0.0, auto_mlm_weight=0.0, mlm_weight=0.0)


def test_masking_objective_without_mask_token_is_rejected(make_config):
    from modeling_automlm import AutoMLMForPreTraining

    with pytest.raises(ValueError, match="mask_token_id"):
        AutoMLMForPreTraining(make_config(mask_token_id=None))
    # CL alone needs no mask token.
    AutoMLMForPreTraining(make_config(mask_token_id=None, auto_mlm_weight=0.0))


def test_decoder_only_backbone_is_rejected():
    with pytest.raises(ValueError, match="not a bidirectional encoder"):
        AutoMLMModel(AutoMLMConfig(encoder_config=GPT2Config(n_layer=1, n_embd=32, n_head=4)))


def test_encoder_config_dict_needs_model_type():
    with pytest.raises(ValueError, match="model_type"):
        AutoMLMConfig(encoder_config={"hidden_size": 32})
    config = AutoMLMConfig(encoder_config={"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4})
    assert config.encoder_config.hidden_size == 32


def test_round_trip_keeps_every_field(make_config, tmp_path):
    config = make_config(
        pooling="cls",
        head_fusion="concat",
        head_num_layers=2,
        mlm_weight=0.3,
        masking_scheme="whole_word",
        head_vocab_sample_size=64,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP
    assert saved["encoder_config"]["model_type"] == "bert"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, AutoMLMConfig)
    for field in (
        "pooling",
        "head_fusion",
        "head_num_layers",
        "mlm_weight",
        "masking_scheme",
        "special_token_ids",
        "head_vocab_sample_size",
    ):
        assert getattr(loaded, field) == getattr(config, field)
    assert loaded.encoder_config.to_dict() == config.encoder_config.to_dict()


def test_objective_fields_are_the_signature_with_the_docstring():
    """Each objective field is declared once, in `AutoMLMConfig.__init__`; its docstring entry agrees with it."""
    import ast
    import inspect
    import re

    from modeling_automlm.configuration_automlm import BACKBONE_FIELDS

    parameters = inspect.signature(AutoMLMConfig.__init__).parameters
    fields = {spec.name: spec for spec in AutoMLMConfig.objective_fields()}
    assert list(fields) == [name for name in parameters if name not in {"self", "kwargs", *BACKBONE_FIELDS}]
    assert fields["pooling"].choices == ("mean", "cls", "max")
    assert fields["auto_mlm_weight"].choices is None
    for name, spec in fields.items():
        assert spec.default == parameters[name].default
        assert spec.help and spec.summary.endswith("."), name
        documented = re.search(rf"^ {{8}}{name} \(.*defaults to `?(.+?)`?\):$", AutoMLMConfig.__doc__, re.MULTILINE)
        if documented:  # a field without "defaults to" is documented as optional (None)
            assert ast.literal_eval(documented.group(1)) == spec.default, name
        else:
            assert spec.default is None, name
