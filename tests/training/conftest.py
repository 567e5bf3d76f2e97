import pytest
from accelerate.state import AcceleratorState

from tests.conftest import SENTENCES

TINY = [
    "--backbone", "scratch", "--num_hidden_layers", "1", "--hidden_size", "32", "--num_attention_heads", "2",
    "--intermediate_size", "64",
    "--tokenizer_vocab_size", "200", "--per_device_train_batch_size", "8", "--max_seq_length", "16",
    "--report_to", "none", "--logging_steps", "2", "--learning_rate", "1e-3", "--export_plain", "false",
    "--head_pretraining_steps", "20",
]  # fmt: skip


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus" / "mixed.txt"
    path.parent.mkdir()
    path.write_text("\n".join(SENTENCES * 4 + [f"{s} number {i}" for i, s in enumerate(SENTENCES * 3)]) + "\n")
    return path


def run_args(corpus_file, output_dir, *extra):
    return [*TINY, "--train_files", str(corpus_file), "--output_dir", str(output_dir), *extra]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """`train()` builds its own Accelerator; accelerate keeps one global state per process, reset between tests."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
