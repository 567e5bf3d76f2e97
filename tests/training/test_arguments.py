import pytest

from training.arguments import load_settings_file, parse_args


def test_yaml_sections_then_command_line_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model:\n  pooling: cls\n  auto_mlm_weight: 0.3\ntraining:\n  learning_rate: 0.001\n  max_steps: 7\n"
    )
    model, _, training = parse_args(["--config", str(path), "--max_steps", "9"])
    assert (model.pooling, model.auto_mlm_weight, training.learning_rate, training.max_steps) == ("cls", 0.3, 1e-3, 9)


def test_json_flat_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"head_fusion": "add", "train_files": ["a.txt"]}')
    model, data, _ = parse_args(["--config", str(path)])
    assert model.head_fusion == "add" and data.train_files == ["a.txt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model:\n  poolin: cls\n", r"unknown setting\(s\) \['poolin'\] in section `model`"),
        ("lerning_rate: 1\n", r"unknown setting\(s\) \['lerning_rate'\]"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_bad_settings_files_are_rejected(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_settings_file(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learning_rate", "-1"], "`learning_rate` must be positive"),
        (["--head_learning_rate", "0"], "`head_learning_rate` must be positive"),
        (["--anchor_weight", "-0.5"], "`anchor_weight` must be >= 0"),
        (["--anchor_weight", "1", "--gradient_cache_chunk_size", "4"], "`anchor_weight` does not work with"),
        (["--head_num_layers", "0", "--head_fusion", "prepend"], "head_fusion='prepend'"),
        (["--mask_probability", "0"], "`mask_probability`"),
        (["--hidden_size", "100", "--num_attention_heads", "3"], "divisible"),
        (["--language_sampling_alpha", "2"], "language_sampling_alpha"),
        (["--dev_data", "/no/such/folder"], "does not exist"),
    ],
)
def test_bad_values_are_rejected_before_any_work(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_args(argv)


def test_missing_settings_file():
    with pytest.raises(FileNotFoundError, match="--config"):
        parse_args(["--config", "/no/such.yaml"])


def test_shipped_configs_parse():
    from pathlib import Path

    configs = sorted(p for p in Path(__file__).parents[2].glob("configs/**/*.yaml") if p.parent.name != "accelerate")
    assert configs, "configs/ holds the shipped recipes"
    for path in configs:
        parse_args(["--config", str(path)])


def test_the_default_config_file_is_the_embedded_default():
    from pathlib import Path

    default_file = Path(__file__).parents[2] / "configs" / "default.yaml"
    assert parse_args([]) == parse_args(["--config", str(default_file)])


def test_several_config_files_apply_in_order(tmp_path):
    (tmp_path / "protocol.yaml").write_text("model:\n  hidden_size: 128\n  auto_mlm_weight: 0.1\n")
    (tmp_path / "variant.yaml").write_text("model:\n  auto_mlm_weight: 0.0\n  mlm_weight: 0.1\n")
    model, _, _ = parse_args(["--config", str(tmp_path / "protocol.yaml"), "--config", str(tmp_path / "variant.yaml")])
    assert (model.hidden_size, model.auto_mlm_weight, model.mlm_weight) == (128, 0.0, 0.1)


def test_objective_settings_are_derived_from_the_config():
    """Every objective field of `AutoMLMConfig` is a setting of the same name, default, help text and choices."""
    import dataclasses

    from transformers import HfArgumentParser

    from modeling_automlm import AutoMLMConfig
    from training.arguments import ModelArguments

    settings = {f.name: f for f in dataclasses.fields(ModelArguments)}
    for spec in AutoMLMConfig.objective_fields():
        assert settings[spec.name].default == spec.default
        assert settings[spec.name].metadata["help"] == spec.help.replace("%", "%%")
    assert set(ModelArguments().config_fields()) == {spec.name for spec in AutoMLMConfig.objective_fields()}
    help_text = HfArgumentParser(ModelArguments).format_help()
    assert "{prepend,add,concat}" in help_text and "80% of the time" in help_text
    with pytest.raises(SystemExit):  # argparse names the bad choice and the allowed ones
        parse_args(["--head_fusion", "multiply"])
