"""Completion log-probs: equal to a naive unpadded computation, on both paths, gradients included."""

import pytest
import torch

from preflight.logps.head import logps_from_hidden, logps_from_logits
from tests.helpers import batch_of, naive_sequence_logps, random_pairs, tiny_causal_lm


def test_plain_and_fused_paths_equal_the_naive_computation():
    model = tiny_causal_lm().eval()
    pairs = random_pairs(5)
    batch = batch_of(pairs)
    naive = [naive_sequence_logps(model, p.prompt_ids, p.chosen_ids) for p in pairs] + [
        naive_sequence_logps(model, p.prompt_ids, p.rejected_ids) for p in pairs
    ]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plain = logps_from_logits(logits, batch["input_ids"], batch["completion_mask"])
        hidden = model.get_decoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        fused = logps_from_hidden(
            hidden, model.get_output_embeddings(), batch["input_ids"], batch["completion_mask"], chunk_size=7
        )
    assert plain.dtype == fused.dtype == torch.float32
    assert plain.tolist() == pytest.approx(naive, abs=1e-5)
    assert fused.tolist() == pytest.approx(naive, abs=1e-5)


def test_fused_path_gradients_equal_the_plain_path():
    pairs = random_pairs(4, seed=1)
    batch = batch_of(pairs)
    grads = []
    for fused in (False, True):
        model = tiny_causal_lm(seed=2)
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        if fused:
            hidden = model.get_decoder()(**kwargs).last_hidden_state
            logps = logps_from_hidden(
                hidden, model.get_output_embeddings(), batch["input_ids"], batch["completion_mask"], chunk_size=5
            )
        else:
            logps = logps_from_logits(model(**kwargs).logits, batch["input_ids"], batch["completion_mask"])
        (logps * torch.linspace(-1, 1, logps.shape[0])).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4), name


def test_bf16_logits_give_float32_logps():
    logits = torch.randn(2, 5, 11, dtype=torch.bfloat16)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    out = logps_from_logits(logits, ids, mask)
    expected = [
        sum(torch.log_softmax(logits[r, t - 1].double(), -1)[ids[r, t]].item() for t in range(5) if mask[r, t])
        for r in range(2)
    ]
    assert out.dtype == torch.float32 and out.tolist() == pytest.approx(expected, abs=1e-4)
