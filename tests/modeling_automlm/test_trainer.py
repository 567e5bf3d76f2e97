"""Fine-tuning `AutoMLMForPreTraining` with the transformers `Trainer`, as the README shows."""

import pytest
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from training.data import AutoMLMCollator


class LossRecorder(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def _train(model, tokenizer, dataset, tmp_path) -> list[float]:
    recorder = LossRecorder()
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=60, learning_rate=2e-3, logging_steps=10,
        remove_unused_columns=False, report_to=[], save_strategy="no", use_cpu=True, seed=0, warmup_steps=0,
        dataloader_drop_last=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=AutoMLMCollator(tokenizer, max_length=32),
        callbacks=[recorder],
    )
    trainer.train()
    return recorder.losses


@pytest.mark.slow
def test_trainer_on_unlabelled_text_lowers_the_joint_loss(make_model, tokenizer, sentences, tmp_path):
    model = make_model(auto_mlm_weight=0.5)
    losses = _train(model, tokenizer, Dataset.from_dict({"text": sentences * 4}), tmp_path)
    assert len(losses) == 6
    assert losses[-1] < 0.85 * losses[0], losses


@pytest.mark.slow
def test_trainer_on_labelled_pairs_learns_the_pairing(make_model, tokenizer, sentences, tmp_path):
    model = make_model(auto_mlm_weight=0.0)
    answers = [f"answer {i} {sentence}" for i, sentence in enumerate(reversed(sentences))]
    pairs = Dataset.from_dict({"text": sentences * 4, "positive": answers * 4})
    losses = _train(model, tokenizer, pairs, tmp_path)
    assert losses[-1] < 0.5 * losses[0], losses
