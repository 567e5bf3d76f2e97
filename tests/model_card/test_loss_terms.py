"""The loss terms are declared once (`LOSS_TERMS`): the model's outputs, the trainer's metrics, the curves and the
card all derive from that list, so a new term reaches each of them without being written out again."""

import dataclasses
import json
from types import SimpleNamespace

import torch

import modeling_automlm.modeling_automlm as modeling
from model_card.card import AutoMLMModelCardData
from model_card.curves import _label, curve_panels
from modeling_automlm import AutoMLMForPreTrainingOutput
from modeling_automlm.modeling_automlm import LOSS_TERMS, LossTerm
from training.state import LogWindow, logged_keys

TOY = LossTerm("toy", "toy_weight", "Toy objective", has_accuracy=True)


def test_the_model_outputs_carry_every_declared_term():
    fields = {field.name for field in dataclasses.fields(AutoMLMForPreTrainingOutput)}
    assert {key for term in LOSS_TERMS for key in term.keys} <= fields
    assert [term.name for term in LOSS_TERMS] == ["cl", "auto_mlm", "mlm"]
    assert [term.weight_field for term in LOSS_TERMS] == ["contrastive_weight", "auto_mlm_weight", "mlm_weight"]


def test_joint_loss_weighs_each_declared_term(make_model):
    model = make_model(contrastive_weight=1.0, auto_mlm_weight=0.3, mlm_weight=0.2)
    losses = {term.loss_key: torch.tensor(float(i + 1)) for i, term in enumerate(LOSS_TERMS)}
    assert model.joint_loss(losses).item() == torch.tensor(1.0 * 1 + 0.3 * 2 + 0.2 * 3).item()
    assert model.joint_loss({}).item() == 0.0


def test_a_new_term_reaches_the_metrics_the_curves_and_the_card(monkeypatch, export_dir):
    monkeypatch.setattr(modeling, "LOSS_TERMS", (*LOSS_TERMS, TOY))
    assert logged_keys()[-2:] == ("toy_loss", "toy_accuracy")

    # The trainer's logged metrics.
    window = LogWindow(global_batch=8, accumulation=1)
    one = torch.tensor(1.0)
    window.add(SimpleNamespace(loss=one, cl_loss=one, toy_loss=torch.tensor(0.25), toy_accuracy=torch.tensor(0.5)), 10)
    summary = window.summary(learning_rate=1e-5, steps_left=0)
    assert summary["toy_loss"] == 0.25 and summary["toy_accuracy"] == 0.5

    # The curves: the panel and the label.
    panels = curve_panels([{"step": 1, "toy_loss": 0.25, "toy_accuracy": 0.5}, {"step": 2, "toy_loss": 0.2}])
    assert "toy_loss" in panels["Losses"] and "toy_accuracy" in panels["Masked-token accuracy"]
    assert _label("toy_loss") == "Toy objective" and _label("toy_accuracy") == "Toy objective head (training batch)"

    # The card's objective.
    config = json.loads((export_dir / "config.json").read_text())
    config["toy_weight"] = 0.2
    (export_dir / "config.json").write_text(json.dumps(config))
    assert (0.2, "Toy objective") in AutoMLMModelCardData.from_folder(export_dir).objective
