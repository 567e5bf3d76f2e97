"""The model card: metadata parsed back with `ModelCard.load`, the body's sections, the curves and `automlm-card`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from model_card import AutoMLMModelCardData, generate_model_card, hub_language_codes
from model_card.card import CURVES_FILE, count_parameters
from model_card.cli import card_main
from tests.model_card.conftest import LANGUAGES, eval_entry, write_json, write_training_files

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_card(folder: Path) -> ModelCard:
    return ModelCard.load(folder / "README.md")


def test_metadata_parses_back(export_dir):
    generate_model_card(export_dir, model_id="org/automlm-tiny")
    data = load_card(export_dir).data
    assert data.language == ["en", "fr", "zh"]  # zh-Hant folds into zh
    assert data.pipeline_tag == "sentence-similarity"
    assert data.library_name == "sentence-transformers"
    assert data.license == "apache-2.0"
    assert data.datasets == ["org/faq-queries"]  # Hub datasets only: not the package corpus or a local file
    assert {"sentence-transformers", "feature-extraction", "automlm", "custom_code"} <= set(data.tags)
    assert data.base_model is None  # trained from scratch
    assert data.model_name == "org/automlm-tiny"


def test_model_index_holds_the_evaluation_numbers(export_dir):
    generate_model_card(export_dir, model_id="org/automlm-tiny")
    results = load_card(export_dir).data.eval_results
    expected = json.loads((export_dir / "eval_results.json").read_text())[0]  # this model's; [1] is a baseline
    found = {(r.dataset_config, r.metric_type): r.metric_value for r in results}
    wanted = {(lang, key): value for lang, m in expected["per_language"].items() for key, value in m.items()}
    wanted = {k: v for k, v in wanted.items() if not k[1].startswith("num_")}  # counts are not metrics
    wanted.update({(None, key): value for key, value in expected["macro"].items()})
    assert found == wanted  # exactly the computed numbers: none rounded, none invented, no baseline
    assert {r.task_type for r in results} == {"information-retrieval"}
    assert {r.dataset_name for r in results} == {"chatterbot-qa"}
    assert {r.task_name for r in results} == {"Retrieval (monolingual)"}


def test_model_index_keeps_tasks_apart_and_skips_non_finite(export_dir):
    mono = eval_entry(export_dir.name, 0.0)
    cross = eval_entry(export_dir.name, 0.3, task="cross-lingual") | {"corpus_language": "en", "split": "test"}
    cross["per_language"]["fr"]["mrr@10"] = float("nan")
    write_json(export_dir / "eval_results.json", [mono, cross])
    text = generate_model_card(export_dir)
    found = {(r.task_name, r.dataset_config, r.metric_type): r for r in load_card(export_dir).data.eval_results}
    for entry, task_name in ((mono, "Retrieval (monolingual)"), (cross, "Retrieval (cross-lingual, en corpus)")):
        for language, metrics in entry["per_language"].items():
            for key, value in metrics.items():
                if key.startswith("num_") or value != value:  # counts and NaN are not model-index metrics
                    assert (task_name, language, key) not in found
                else:
                    assert found[(task_name, language, key)].metric_value == value
    assert found[("Retrieval (cross-lingual, en corpus)", None, "ndcg@10")].dataset_split == "test"
    assert "n/a" in text  # the NaN is shown as missing, not as a number


def test_body_sections(export_dir):
    write_training_files(export_dir, history=True)
    text = generate_model_card(export_dir, model_id="org/automlm-tiny", plain_repo_id="org/automlm-tiny-plain")
    assert 'SentenceTransformer("org/automlm-tiny", trust_remote_code=True)' in text
    assert 'SentenceTransformer("org/automlm-tiny-plain")' in text
    assert 'AutoModel.from_pretrained("org/automlm-tiny", trust_remote_code=True)' in text
    assert "Trainer(" in text
    for language in LANGUAGES:
        assert f"| {language} |" in text
    assert "| `learning_rate` | 0.0003 |" in text  # hyperparameters from training_config.json
    assert "1 h 02 min 03 s" in text and "CPU (2 cores)" in text
    assert f"![Training curves]({CURVES_FILE})" in text
    assert "0.1235" in text  # evaluation table (4 decimals) and the baseline comparison
    assert "bm25" in text and "(this model)" in text
    assert "arXiv:2203.16187" in text
    assert "demonstration" in text  # from scratch on a small corpus
    assert "Transformers: " in text
    assert "{{" not in text and "}}" not in text


def test_no_model_index_without_evaluation(export_dir):
    (export_dir / "eval_results.json").unlink()
    text = generate_model_card(export_dir)
    data = load_card(export_dir).data
    assert data.eval_results is None
    assert "model-index" not in text
    assert "## Evaluation" not in text
    assert "No evaluation results" in text


def test_unknown_evaluated_models_stay_out_of_the_metadata(export_dir):
    write_json(export_dir / "eval_results.json", [{"model": name, "macro": {"ndcg@10": 0.5}} for name in "ab"])
    text = generate_model_card(export_dir)
    assert load_card(export_dir).data.eval_results is None
    assert "## Evaluation" in text  # still shown, as a comparison


def test_base_model_only_for_hub_ids(export_dir, tmp_path):
    write_training_files(export_dir, backbone="xlm-roberta-base")
    generate_model_card(export_dir)
    assert load_card(export_dir).data.base_model == "xlm-roberta-base"
    text = generate_model_card(export_dir)
    assert "demonstration" not in text  # not from scratch

    local_backbone = tmp_path / "my-encoder"
    local_backbone.mkdir()
    write_training_files(export_dir, backbone=str(local_backbone))
    generate_model_card(export_dir)
    assert load_card(export_dir).data.base_model is None  # a folder is not valid Hub metadata


def test_training_curves_png(export_dir):
    write_training_files(export_dir, history=True)
    generate_model_card(export_dir)
    png = export_dir / CURVES_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    png.unlink()
    write_training_files(export_dir, history=False)
    text = generate_model_card(export_dir)
    assert not png.exists()
    assert CURVES_FILE not in text


def test_write_false_writes_nothing(export_dir):
    write_training_files(export_dir, history=True)
    text = generate_model_card(export_dir, write=False)
    assert text.startswith("---\n")
    assert not (export_dir / "README.md").exists() and not (export_dir / CURVES_FILE).exists()


def test_folder_saved_by_hand_renders_without_invented_numbers(make_model, tmp_path):
    make_model().save_pretrained(tmp_path)  # config.json + weights + code only, no JSON files
    text = generate_model_card(tmp_path)
    data = load_card(tmp_path).data
    assert data.eval_results is None and data.language is None and data.base_model is None
    assert "custom_code" in data.tags
    for section in ("## Training", "## Evaluation", "Wall time", "per language"):
        assert section not in text
    assert "## Citation" in text


def test_plain_export_card(make_model, tokenizer, tmp_path):
    from training.export import export_plain

    export_plain(make_model(), tokenizer, tmp_path)
    text = generate_model_card(tmp_path)
    data = load_card(tmp_path).data
    assert "custom_code" not in data.tags
    assert "trust_remote_code" not in text
    assert "- **Pooling:** mean, L2-normalised" in text


def test_parameter_count_from_the_safetensors_header(make_model, tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    counts = count_parameters(tmp_path / "model.safetensors")
    assert counts["automlm"] == sum(p.numel() for p in model.automlm.parameters())
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())


def test_hub_language_codes():
    assert hub_language_codes(["en", "zh", "zh-Hant", "hi-Latn", "pt_BR", "EN"]) == ["en", "zh", "hi", "pt"]
    assert hub_language_codes(["english"]) == []  # not an ISO code: left out, not guessed


def test_card_data_is_a_plain_view_of_the_files(export_dir):
    data = AutoMLMModelCardData.from_folder(export_dir)
    assert data.languages == LANGUAGES
    assert data.trained_from_scratch and data.base_model is None
    assert data.objective == [(1.0, "CL"), (0.1, "Auto-MLM")]
    assert data.embedding_dimension == 32 and data.max_seq_length == 64


def test_the_objective_names_the_anchor_of_a_run_that_used_one(export_dir):
    config = json.loads((export_dir / "training_config.json").read_text())
    config["training"]["anchor_weight"] = 0.1
    (export_dir / "training_config.json").write_text(json.dumps(config))
    data = AutoMLMModelCardData.from_folder(export_dir)
    assert data.objective == [(1.0, "CL"), (0.1, "Auto-MLM"), (0.1, "anchor (1 - cosine to the starting encoder)")]
    assert "0.1 * anchor" in data.template_values(curves_file=None)["objective"]


def test_card_main_in_process(export_dir, capsys):
    assert card_main([str(export_dir), "--model-id", "org/x", "--license", "mit"]) == 0
    assert load_card(export_dir).data.license == "mit"
    with pytest.raises(SystemExit) as exit_info:
        card_main([str(export_dir / "missing")])
    assert exit_info.value.code == 1
    assert "config.json" in capsys.readouterr().err


def test_automlm_card_command(export_dir):
    """`automlm-card DIR` end to end, as a user runs it (the installed console script)."""
    command = shutil.which("automlm-card") or pytest.skip("the automlm-card script is not installed")
    write_training_files(export_dir, history=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [command, str(export_dir), "--model-id", "org/automlm-tiny"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    data = load_card(export_dir).data
    assert data.model_name == "org/automlm-tiny" and data.eval_results
    assert (export_dir / CURVES_FILE).is_file()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:'pin_memory' argument")
def test_usage_snippets_run(export_dir, tmp_path, monkeypatch):
    """Every Python block of the card runs against the folder (sentence-transformers, transformers, Trainer)."""
    text = generate_model_card(export_dir, model_id=str(export_dir), plain_repo_id=None)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)  # the Trainer block writes automlm-finetuned/
    for block in blocks:
        exec(compile(block, "<model card>", "exec"), {"__name__": "__card__"})
    assert (tmp_path / "automlm-finetuned" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("prompts", [None, {"query": "query: ", "document": "passage: "}], ids=["no prompts", "E5"])
def test_the_card_snippets_encode_queries_alike(make_model, tokenizer, tmp_path, prompts):
    """The sentence-transformers and transformers snippets give the same query vectors, prompts or not."""
    from training.export import export_sentence_transformers

    folder = tmp_path / "automlm-tiny"
    export_sentence_transformers(make_model(), tokenizer, folder, max_seq_length=64, prompts=prompts)
    write_training_files(folder)
    text = generate_model_card(folder, model_id=str(folder), plain_repo_id=None)
    assert ("`encode_query` and `encode_document` add the model's prompts" in text) == bool(prompts)
    sentence_transformers_block, transformers_block = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)[:2]
    by_library = {"__name__": "__card__"}
    exec(compile(sentence_transformers_block, "<model card>", "exec"), by_library)
    by_hand = {"__name__": "__card__"}
    exec(compile(transformers_block, "<model card>", "exec"), by_hand)
    torch.testing.assert_close(torch.as_tensor(by_library["query_embeddings"]), by_hand["embeddings"])


def test_training_curves_have_one_panel_per_quantity_and_none_for_the_eta():
    from model_card.curves import curve_panels

    history = [
        {"step": 10, "loss": 5.5, "cl_loss": 2.0, "auto_mlm_accuracy": 0.02, "learning_rate": 3e-4, "eta_s": 120.0,
         "sentences_per_s": 40.0, "tokens_per_s": 900.0, "alignment": 0.4, "uniformity": -2.5, "mlm_loss": None},
        {"step": 20, "loss": 4.5, "dev_ndcg@10": 0.31},
    ]  # fmt: skip
    panels = curve_panels(history)
    assert list(panels) == [
        "Losses", "Masked-token accuracy", "Learning rate", "Alignment and uniformity", "Throughput", "Dev evaluation"
    ]  # fmt: skip
    assert panels["Losses"]["loss"] == ([10, 20], [5.5, 4.5]) and "mlm_loss" not in panels["Losses"]
    assert list(panels["Masked-token accuracy"]) == ["auto_mlm_accuracy"]  # not on the axis of sentences/s
    assert list(panels["Throughput"]) == ["sentences_per_s", "tokens_per_s"]
    assert all("eta_s" not in series for series in panels.values())


def test_objective_table_reads_the_config_fields(export_dir):
    from modeling_automlm import AutoMLMConfig

    text = generate_model_card(export_dir, write=False)
    for spec in AutoMLMConfig.objective_fields():
        assert f"| `{spec.name}` |" in text and spec.summary in text
