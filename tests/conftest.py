"""Shared fixtures: a tiny tokenizer trained in-process and tiny encoder configs. Everything runs offline."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Pretrained Auto-MLM heads of the tests' tiny models go to a folder of this session, not the user's cache.
os.environ.setdefault("AUTOMLM_HEAD_CACHE", os.path.join(tempfile.mkdtemp(prefix="automlm-heads-"), "heads"))

import pytest
import torch
from transformers import BertConfig, DistilBertConfig, ModernBertConfig, XLMRobertaConfig

from modeling_automlm import AutoMLMConfig, AutoMLMForPreTraining
from training.tokenization import train_wordpiece_tokenizer

torch.set_num_threads(1)

SENTENCES = [
    "how do i reset my password",
    "where is my order",
    "can i return a product after thirty days",
    "comment réinitialiser mon mot de passe",
    "où est ma commande",
    "puis-je retourner un produit",
    "wie setze ich mein passwort zurück",
    "wo ist meine bestellung",
    "cómo restablezco mi contraseña",
    "dónde está mi pedido",
    "我的订单在哪里",
    "如何重置密码",
    "the delivery was late and the box was damaged",
    "payment failed with my credit card",
    "change the shipping address of an order",
    "cancel my subscription please",
]


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def tokenizer():
    return train_wordpiece_tokenizer(SENTENCES * 3, vocab_size=300, min_frequency=1, model_max_length=64)


def tiny_encoder_config(model_type: str, vocab_size: int, pad_token_id: int = 0):
    common = {"vocab_size": vocab_size, "max_position_embeddings": 64, "pad_token_id": pad_token_id}
    if model_type == "bert":
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **common)
    if model_type == "xlm-roberta":
        common["max_position_embeddings"] = 66  # XLM-R offsets positions by pad_token_id + 1
        return XLMRobertaConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **common
        )
    if model_type == "distilbert":
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **common)
    if model_type == "modernbert":
        special = {"bos_token_id": 2, "eos_token_id": 3, "cls_token_id": 2, "sep_token_id": 3}
        return ModernBertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            global_attn_every_n_layers=1, **special, **common,
        )  # fmt: skip
    raise ValueError(model_type)


@pytest.fixture
def make_config(tokenizer):
    """Build an `AutoMLMConfig` around a tiny encoder; keyword arguments override config fields."""

    def make(model_type: str = "bert", **kwargs) -> AutoMLMConfig:
        encoder = tiny_encoder_config(model_type, len(tokenizer), tokenizer.pad_token_id)
        kwargs.setdefault("mask_token_id", tokenizer.mask_token_id)
        kwargs.setdefault(
            "special_token_ids", [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]
        )
        return AutoMLMConfig(encoder_config=encoder, **kwargs)

    return make


@pytest.fixture
def make_model(make_config):
    def make(model_type: str = "bert", seed: int = 0, **kwargs) -> AutoMLMForPreTraining:
        torch.manual_seed(seed)
        return AutoMLMForPreTraining(make_config(model_type, **kwargs))

    return make


@pytest.fixture
def make_dropout_free_model(make_config):
    """Like `make_model`, with an encoder (and so heads) without dropout, in training mode: two forward passes of
    the same batch then see the same network, so gradients can be compared exactly."""

    def make(model_type: str = "bert", seed: int = 0, **kwargs) -> AutoMLMForPreTraining:
        config = make_config(model_type, **kwargs)
        config.encoder_config.hidden_dropout_prob = 0.0
        config.encoder_config.attention_probs_dropout_prob = 0.0
        torch.manual_seed(seed)
        return AutoMLMForPreTraining(config).train()

    return make


@pytest.fixture
def batch(tokenizer, sentences):
    return tokenizer(sentences[:8], padding=True, return_tensors="pt")
