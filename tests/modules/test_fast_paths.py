"""The fast paths give the plain path's log-probs (to 1e-5) and gradients, and the defaults pick them."""

import pytest
import torch

from preflight import PreferenceModule
from preflight.logps import CompletionLogps
from preflight.logps.rows import pack_pairs
from tests.conftest import TINY_MODEL
from tests.helpers import batch_of, forced, naive_sequence_logps, random_pairs

PATHS = [(False, False), (True, False), (False, True), (True, True)]  # (fused lm_head, shared prompt)


def module(seed=0, **kw):
    m = PreferenceModule(str(TINY_MODEL), init_seed=seed, **kw)
    m.configure_model()
    return m


def test_packed_rows_hold_prompt_once_then_both_completions():
    pairs = random_pairs(3, seed=11)
    packed = pack_pairs(batch_of(pairs))
    for i, p in enumerate(pairs):
        n = len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
        assert packed.input_ids[i, :n].tolist() == p.prompt_ids + p.chosen_ids + p.rejected_ids
        P, C = len(p.prompt_ids), len(p.chosen_ids)
        assert packed.position_ids[i, P + C].item() == P  # rejected positions restart after the prompt
        mask = packed.mask()[i, 0]
        assert not mask[P + C, P : P + C].any()  # the rejected completion never sees the chosen one
        assert mask[P + C, :P].all() and mask[P + C, P + C] and not mask[P + C, P + C + 1 :].any()


@pytest.mark.parametrize("fused, packed", PATHS)
def test_every_path_equals_the_naive_computation(fused, packed):
    m = module()
    pairs = random_pairs(5, seed=12)
    with torch.no_grad():
        got = forced(fused, packed)(m.policy, batch_of(pairs))
    naive = [naive_sequence_logps(m.policy, p.prompt_ids, p.chosen_ids) for p in pairs] + [
        naive_sequence_logps(m.policy, p.prompt_ids, p.rejected_ids) for p in pairs
    ]
    assert got.tolist() == pytest.approx(naive, abs=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_every_path_has_the_plain_gradients(attention):
    pairs = random_pairs(4, seed=13)
    batch = batch_of(pairs)
    grads = {}
    for path in PATHS:
        m = module(seed=1)
        m.policy.config._attn_implementation = attention
        logps = forced(*path)(m.policy, batch)
        (logps * torch.linspace(-1, 1, logps.shape[0])).sum().backward()
        grads[path] = {n: p.grad.clone() for n, p in m.policy.named_parameters()}
    for path in PATHS[1:]:
        for name, g in grads[(False, False)].items():
            assert torch.allclose(grads[path][name], g, atol=1e-5, rtol=1e-4), (path, name)


def test_auto_picks_both_fast_paths_for_llama_and_off_turns_them_off():
    m = module()
    path = m.path_for(m.policy)
    assert (path.fused, path.shared) == (True, True)
    quadratic = (
        "sdpa would need a dense mask over each packed row, quadratic in its length (flex_attention or "
        "flash_attention_2 take packed rows; set on to pack anyway)"
    )
    assert m.describe_paths() == (
        "log-probs: fused lm_head on (plain logits), shared prompt on (full attention), "
        f"padding-free off ({quadratic}); rows over 4096 tokens go unshared "
        "(dense_mask_max_length)"
    )
    assert m.hparams["logps_path"]["shared_prompt"] is True and m.hparams["logps_path"]["padding_free"] is False
    off = module(fused_lm_head="off", shared_prompt="off", padding_free="off")
    assert off.describe_paths() == (
        "log-probs: fused lm_head off (off as set), shared prompt off (off as set), padding-free off (off as set)"
    )


def test_a_peft_policy_and_its_disabled_adapter_take_the_same_decided_paths():
    m = module(peft={"r": 4}, reference="adapter")
    assert m.path_for(m.policy) is m.path_for(m.policy.get_base_model())


def test_rows_longer_than_the_dense_mask_limit_take_separate_rows(monkeypatch):
    pairs = random_pairs(4, seed=14)
    batch = batch_of(pairs)
    longest = max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    m = module(dense_mask_max_length=longest - 1)
    monkeypatch.setattr(
        CompletionLogps, "_layout_logps", lambda *a, **k: pytest.fail("built a dense mask over the limit")
    )
    with torch.no_grad():
        got = m.completion_logps(m.policy, batch)
    naive = [naive_sequence_logps(m.policy, p.prompt_ids, p.chosen_ids) for p in pairs] + [
        naive_sequence_logps(m.policy, p.prompt_ids, p.rejected_ids) for p in pairs
    ]
    assert got.tolist() == pytest.approx(naive, abs=1e-5)
    monkeypatch.undo()
    within = module(dense_mask_max_length=longest)
    calls = []
    original = CompletionLogps._layout_logps
    monkeypatch.setattr(CompletionLogps, "_layout_logps", lambda self, *a: calls.append(1) or original(self, *a))
    with torch.no_grad():
        within.completion_logps(within.policy, batch)
    assert calls == [1]
