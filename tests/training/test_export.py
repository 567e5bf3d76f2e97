import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, BertModel

from modeling_automlm import AutoMLMModel
from training.export import export_plain, export_sentence_transformers

TEXTS = ["where is my order", "wo ist meine bestellung", "我的订单在哪里", "cancel my subscription please now"]


@pytest.fixture
def trained_like_model(make_model):
    model = make_model(pooling="mean", head_fusion="add").eval()
    with torch.no_grad():  # move weights away from the init so that a wrong load would show
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def reference_embeddings(model, tokenizer):
    with torch.no_grad():
        return model.automlm(**tokenizer(TEXTS, padding=True, return_tensors="pt")).sentence_embedding


@pytest.mark.slow
def test_sentence_transformers_export_matches_the_model(trained_like_model, tokenizer, tmp_path):
    export_sentence_transformers(trained_like_model, tokenizer, tmp_path, max_seq_length=64)
    expected = reference_embeddings(trained_like_model, tokenizer)
    st = SentenceTransformer(str(tmp_path), trust_remote_code=True, device="cpu")
    torch.testing.assert_close(st.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)
    assert st.max_seq_length == 64
    # The same folder still loads with transformers.
    model = AutoModel.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert isinstance(model, AutoMLMModel)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_plain_export_needs_no_custom_code(make_model, tokenizer, tmp_path, pooling):
    model = make_model(pooling=pooling).eval()
    export_plain(model, tokenizer, tmp_path)
    assert not list(tmp_path.glob("*.py")), "the plain export must not ship code"
    st = SentenceTransformer(str(tmp_path), device="cpu")  # no trust_remote_code
    expected = reference_embeddings(model, tokenizer)
    torch.testing.assert_close(st.encode(TEXTS, convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)
    assert isinstance(AutoModel.from_pretrained(tmp_path), BertModel)


@pytest.mark.parametrize("plain", [False, True])
def test_prompts_of_the_export_equal_adding_the_prefix_by_hand(trained_like_model, tokenizer, tmp_path, plain):
    prompts = {"query": "query: ", "document": "passage: "}
    export = export_plain if plain else export_sentence_transformers
    export(trained_like_model, tokenizer, tmp_path, max_seq_length=64, prompts=prompts)
    st = SentenceTransformer(str(tmp_path), trust_remote_code=not plain, device="cpu")
    assert st.prompts == prompts
    by_hand_queries = st.encode([f"query: {text}" for text in TEXTS], convert_to_tensor=True)
    by_hand_documents = st.encode([f"passage: {text}" for text in TEXTS], convert_to_tensor=True)
    torch.testing.assert_close(st.encode_query(TEXTS, convert_to_tensor=True), by_hand_queries, atol=1e-6, rtol=0)
    torch.testing.assert_close(st.encode_document(TEXTS, convert_to_tensor=True), by_hand_documents, atol=1e-6, rtol=0)
    # The prompt changes the vector: the check above is not vacuous.
    assert not torch.allclose(by_hand_queries, st.encode(TEXTS, convert_to_tensor=True), atol=1e-4)


@pytest.mark.parametrize("plain", [False, True])
def test_both_exports_keep_a_max_seq_length_below_the_tokenizer_s_limit(make_model, tokenizer, tmp_path, plain):
    model = make_model().eval()
    export = export_plain if plain else export_sentence_transformers
    export(model, tokenizer, tmp_path, max_seq_length=6)
    st = SentenceTransformer(str(tmp_path), trust_remote_code=not plain, device="cpu")
    assert tokenizer.model_max_length == 64 and st.max_seq_length == 6
    long_text = " ".join(TEXTS)
    truncated = tokenizer(long_text, truncation=True, max_length=6, return_tensors="pt")
    with torch.no_grad():
        expected = model.automlm(**truncated).sentence_embedding
    torch.testing.assert_close(st.encode([long_text], convert_to_tensor=True), expected, atol=1e-5, rtol=1e-4)
