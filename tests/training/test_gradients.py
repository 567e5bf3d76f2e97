import pytest
import torch

from training.gradients import encoder_layer_parameters, term_gradient_norms


def _norm_of_backward(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    parameters = encoder_layer_parameters(model)
    return float(torch.stack([p.grad.pow(2).sum() for p in parameters if p.grad is not None]).sum().sqrt())


@pytest.mark.parametrize("sample_size", [0, 50])
def test_term_gradient_norms_match_one_backward_per_term(make_model, batch, sample_size):
    model = make_model(auto_mlm_weight=0.5, head_vocab_sample_size=sample_size)
    torch.manual_seed(0)
    outputs = model(**batch)
    norms = term_gradient_norms(model, outputs)
    assert norms["grad_norm_cl"] == pytest.approx(_norm_of_backward(model, 1.0 * outputs.cl_loss), rel=1e-5)
    assert norms["grad_norm_auto_mlm"] == pytest.approx(
        _norm_of_backward(model, 0.5 * outputs.auto_mlm_loss), rel=1e-5
    )
    assert norms["grad_ratio_auto_mlm"] == pytest.approx(norms["grad_norm_auto_mlm"] / norms["grad_norm_cl"])
    assert model.get_input_embeddings().weight not in set(encoder_layer_parameters(model))
    assert "grad_norm_mlm" not in norms  # a term the objective does not have
