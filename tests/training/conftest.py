import pytest
from accelerate.state import AcceleratorState


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """`train()` builds its own Accelerator; accelerate keeps one global state per process, reset between tests."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
