"""The TSDAE peer of the comparison runner: its noise and a short run under a protocol."""

import json
import random

import pytest
import torch
from transformers import AutoModel

from comparison.tsdae import DELETION_RATIO, delete_words, train_tsdae
from tests.conftest import SENTENCES, tiny_encoder_config


def test_delete_words_keeps_order_and_at_least_one_word():
    rng = random.Random(0)
    text = " ".join(f"w{i}" for i in range(200))
    kept = delete_words(text, rng).split()
    assert kept == sorted(kept, key=lambda w: int(w[1:]))  # order kept, words only dropped
    assert abs(len(kept) / 200 - (1 - DELETION_RATIO)) < 0.1
    assert delete_words("x", rng) == "x"  # never empty
    chinese = "我的订单在哪里我想退货"
    damaged = delete_words(chinese, rng)
    assert 0 < len(damaged) < len(chinese) and all(c in chinese for c in damaged)  # no spaces: characters


@pytest.mark.slow
@pytest.mark.parametrize("untied", [False, True])
def test_tsdae_trains_under_a_protocol_and_exports_with_prompts(tmp_path, tokenizer, untied):
    from sentence_transformers import SentenceTransformer

    backbone = tmp_path / "backbone"
    torch.manual_seed(0)
    AutoModel.from_config(tiny_encoder_config("bert", len(tokenizer), tokenizer.pad_token_id)).save_pretrained(
        backbone
    )
    tokenizer.save_pretrained(backbone)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "en.txt").write_text("\n".join(SENTENCES * 3) + "\n")
    argv = [
        "--backbone", str(backbone), "--train_files", str(tmp_path / "text"), "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--max_seq_length", "16", "--logging_steps", "1",
        "--learning_rate", "1e-3", "--query_prompt", "q: ", "--document_prompt", "d: ",
        "--output_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    export = train_tsdae(argv, tied=not untied)
    metrics = json.loads((export / "training_metrics.json").read_text())
    assert [record["step"] for record in metrics["history"]] == [1, 2, 3]
    assert metrics["tied_decoder"] is not untied
    model = SentenceTransformer(str(export), device="cpu")
    assert model.prompts == {"query": "q: ", "document": "d: "}
    before = AutoModel.from_pretrained(backbone).embeddings.word_embeddings.weight
    after = model[0].auto_model.embeddings.word_embeddings.weight
    assert not torch.allclose(before, after)  # the encoder was trained
