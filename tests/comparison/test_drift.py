import json

import pytest
import torch

from comparison import drift as drift_module
from comparison.drift import drift
from training.health import uniformity


def test_drift_is_one_for_the_reference_itself_and_minus_one_for_its_opposite():
    reference = torch.randn(50, 8)
    assert drift(reference, reference)["cos_to_reference"] == pytest.approx(1.0)
    assert drift(reference, -reference)["cos_to_reference"] == pytest.approx(-1.0)
    moved = reference + 0.5 * torch.randn(50, 8)
    result = drift(reference, moved)
    assert -1.0 < result["cos_to_reference"] < 1.0
    assert result["uniformity"] == pytest.approx(uniformity(moved))
    with pytest.raises(ValueError, match="different sentences"):
        drift(reference, reference[:10])


def test_the_command_samples_the_protocol_text_with_its_prefix_and_compares_every_run(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "text"
    corpus.mkdir()
    (corpus / "en.txt").write_text("".join(f"sentence number {i}\n" for i in range(30)), encoding="utf-8")
    config = tmp_path / "protocol.yaml"
    config.write_text(f"model:\n  backbone: scratch\ndata:\n  train_files: [{corpus}]\n  max_seq_length: 16\n"
                      "  text_prefix: 'query: '\n", encoding="utf-8")  # fmt: skip
    for run in ("untrained/seed-0", "same/seed-0", "moved/seed-0"):
        (tmp_path / "runs" / run / "final").mkdir(parents=True)
    seen: list[list[str]] = []

    def load_encoder(model_dir, max_seq_length):
        assert max_seq_length == 16
        sign = -1.0 if model_dir.parent.parent.name == "moved" else 1.0

        def encode(texts):
            seen.append(texts)
            return sign * torch.tensor([[float(len(t)), 1.0 + sum(map(ord, t)) % 7] for t in texts])

        return encode

    monkeypatch.setattr(drift_module, "load_encoder", load_encoder)
    out = tmp_path / "drift.json"
    drift_module.main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"), "--runs", "same/seed-0",
                       "moved/seed-0", "--sentences", "10", "--output", str(out)])  # fmt: skip
    assert len(seen) == 3 and all(texts == seen[0] for texts in seen)  # every model, the same sentences
    assert len(seen[0]) == 10 and all(t.startswith("query: sentence number ") for t in seen[0])
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["same/seed-0"]["cos_to_reference"] == pytest.approx(1.0)
    assert results["moved/seed-0"]["cos_to_reference"] == pytest.approx(-1.0)
    assert "moved/seed-0" in capsys.readouterr().out


def test_a_missing_run_is_named_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        drift_module.main(["--config", "p.yaml", "--runs-dir", str(tmp_path), "--runs", "cl_only/seed-0"])
    assert "cl_only/seed-0/final" in capsys.readouterr().err
