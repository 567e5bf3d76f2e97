"""The run's health signals: the step where CL has solved its in-batch task."""

import logging

import pytest

import training.health
import training.train
from tests.training.conftest import run_args
from training.arguments import parse_args
from training.health import CL_SOLVED_LOSS, contrastive_task_solved


def test_the_solved_contrastive_task_is_flagged_once_at_its_first_logged_step():
    above, below = {"cl_loss": CL_SOLVED_LOSS * 2}, {"cl_loss": CL_SOLVED_LOSS / 2}
    history = [{"step": 0, "dev_ndcg@10": 0.5}, {"step": 20, **above}]
    assert not contrastive_task_solved(history, {"step": 40, **above})
    assert contrastive_task_solved(history, {"step": 40, **below})
    assert not contrastive_task_solved([*history, {"step": 40, **below}, {"step": 60, **above}], {"step": 80, **below})
    assert not contrastive_task_solved(history, {"step": 40, "auto_mlm_loss": 0.0})  # no CL term: nothing to solve


@pytest.mark.parametrize(
    "objective, warnings",
    [
        (["--auto_mlm_weight", "0.1"], 1),
        (["--auto_mlm_weight", "0"], 0),
        (["--auto_mlm_weight", "0.1", "--auto_mlm_gradient_share", "0.25"], 0),  # the cap bounds the term already
    ],
)
def test_training_warns_once_when_cl_is_solved_and_auto_mlm_drives_the_encoder(
    corpus_file, tmp_path, caplog, monkeypatch, objective, warnings
):
    monkeypatch.setattr(training.health, "CL_SOLVED_LOSS", 100.0)  # a tiny run's loss is below it from the start
    with caplog.at_level(logging.WARNING, logger="training.train"):
        training.train.train(*parse_args(run_args(corpus_file, tmp_path / "out", "--max_steps", "4", "--save_steps",
                                                  "0", *objective)))  # fmt: skip
    solved = [record for record in caplog.records if "CL has solved its in-batch task" in record.getMessage()]
    assert len(solved) == warnings  # logging_steps 2: two logged steps, both below the threshold, one warning
    if warnings:
        assert solved[0].args[0] == 2 and "--auto_mlm_weight 0" in solved[0].getMessage()
        assert "--auto_mlm_gradient_share 0.25" in solved[0].getMessage()
