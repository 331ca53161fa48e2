"""Policy log-probs through the paths `auto` picks equal a naive per-sequence computation, on tiny
random configs of real architectures, with batches whose first pair fits inside every sliding
window and whose later pairs do not; and the same for batches of lists (K = 4 completions per prompt in
one K-segment row, and one list of 3), the first list inside the window, the later ones far longer."""

import pytest
import torch

from preflight import PreferenceModule
from preflight.datamodules import ListCollator, TokenizedList, TokenizedPair
from preflight.logps import FastPathError
from tests.architectures.tiny import ARCHITECTURES, VOCAB, WINDOW, tiny_model
from tests.helpers import batch_of

NO_SDPA = {"gemma2", "bloom", "gpt_oss"}  # transformers offers these only with eager attention
SHARED_PROMPT_OFF = {"bloom": "ALiBi", "lfm2": "a short convolution along the row"}
# (architecture, attention) -> the paths `auto` must take, decided from code and config
EXPECTED = {
    (arch, attention): (True, arch not in SHARED_PROMPT_OFF)
    for arch in ARCHITECTURES
    for attention in ("sdpa", "eager")
    if not (attention == "sdpa" and arch in NO_SDPA)
}


def pairs(seed=0):
    """The first pair inside the window, then pairs far longer than it."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(3, VOCAB, (k,), generator=g).tolist()  # noqa: E731
    shapes = [(2, 2, 1), (9, 7, 11), (4, 13, 3), (12, 5, 9)]
    assert shapes[0][0] + max(shapes[0][1:]) <= WINDOW and all(p + c > 2 * WINDOW for p, c, _ in shapes[1:])
    return [TokenizedPair(i, [1] + ids(p - 1), ids(c), ids(r)) for i, (p, c, r) in enumerate(shapes)]


def lists(seed=0):
    """K = 4 completions per prompt (one list of 3): the first list inside the window, then lists far longer."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda k: torch.randint(3, VOCAB, (k,), generator=g).tolist()  # noqa: E731
    shapes = [(2, (1, 2, 1, 2)), (9, (7, 11, 3, 14)), (12, (5, 9, 13)), (4, (13, 3, 8, 10))]
    assert shapes[0][0] + max(shapes[0][1]) <= WINDOW and all(p + max(c) > 2 * WINDOW for p, c in shapes[1:])
    return [
        TokenizedList(i, [1] + ids(p - 1), [ids(c) for c in completions], [float(k) for k in range(len(completions))])
        for i, (p, completions) in enumerate(shapes)
    ]


def list_batch(seed=0):
    return ListCollator(0, mode="list")(lists(seed))


def naive(model, prompt, completion):
    """Σ log p(completion | prompt): the sequence alone, batch of 1, the model's own logits, float64."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].double()
    return sum(torch.log_softmax(logits[len(prompt) + k - 1], -1)[t].item() for k, t in enumerate(completion))


@pytest.mark.parametrize("arch, attention", sorted(EXPECTED), ids=lambda x: str(x))
def test_auto_paths_equal_the_naive_computation(arch, attention):
    module = PreferenceModule(tiny_model(arch, attention), reference="none", loss="simpo")
    module.configure_model()
    path = module.path_for(module.policy)
    assert (path.fused, path.shared) == EXPECTED[(arch, attention)], path.describe()
    assert_logps_are_naive(module)


def assert_logps_are_naive(module, naive_attention=None):
    """The module's policy log-probs of `pairs()` and of `lists()` equal `naive` (with `naive_attention`, when
    given)."""
    data, items = pairs(), lists()
    with torch.no_grad():
        got_pairs = module.completion_logps(module.policy, batch_of(data))
        got_lists = module.completion_logps(module.policy, list_batch())
        if naive_attention:
            module.policy.config._attn_implementation = naive_attention
        want_pairs = [naive(module.policy, p.prompt_ids, p.chosen_ids) for p in data] + [
            naive(module.policy, p.prompt_ids, p.rejected_ids) for p in data
        ]
        want_lists = [naive(module.policy, item.prompt_ids, c) for item in items for c in item.completion_ids]
    assert got_pairs.tolist() == pytest.approx(want_pairs, abs=1e-5, rel=1e-6)
    assert got_lists.tolist() == pytest.approx(want_lists, abs=1e-5, rel=1e-6)


# packed rows of at most 40 tokens: the shared units of `pairs()` (5, 27, 20 and 26 tokens) need at least 2 rows, so
# some row holds two pairs; the separate sequences (prompt + one completion each) share rows too
PACKED = dict(padding_free="on", max_tokens_per_row=40)


@pytest.mark.parametrize(
    "arch, attention", sorted(k for k in EXPECTED if k[0] not in SHARED_PROMPT_OFF), ids=lambda x: str(x)
)
@pytest.mark.parametrize("shared", ["auto", "off"])
def test_padding_free_rows_equal_the_naive_computation(arch, attention, shared):
    module = PreferenceModule(
        tiny_model(arch, attention), reference="none", loss="simpo", shared_prompt=shared, **PACKED
    )
    module.configure_model()
    path = module.path_for(module.policy)
    assert path.padding_free and path.padding_free_reason == "dense mask" and path.shared == (shared == "auto")
    assert_logps_are_naive(module)


@pytest.fixture
def uncompiled_flex(monkeypatch):
    """transformers compiles flex_attention on first use (tens of seconds on CPU); the eager kernel applies the
    same block mask (the compiled kernel runs in tests/gpu)."""
    from torch.nn.attention.flex_attention import flex_attention
    from transformers.integrations import flex_attention as integration

    monkeypatch.setattr(
        integration,
        "compile_friendly_flex_attention",
        lambda q, k, v, training=False, **kwargs: flex_attention(q, k, v, **kwargs),
    )


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "qwen2"])
def test_flex_attention_block_masks_equal_the_naive_computation(arch, uncompiled_flex):
    """FlexAttention has no backward on CPU: values here, gradients in tests/gpu."""
    module = PreferenceModule(tiny_model(arch, "flex_attention"), reference="none", loss="simpo", max_tokens_per_row=40)
    module.configure_model()
    path = module.path_for(module.policy)
    assert path.shared and path.padding_free and path.rendering == "block", path.describe()
    assert_logps_are_naive(module, naive_attention="eager")


@pytest.mark.parametrize(
    "arch, attention", [("gemma2", "eager"), ("mistral", "sdpa"), ("cohere", "sdpa"), ("gemma3_text", "sdpa")]
)
@pytest.mark.parametrize("kind", ["pairs", "lists"])
def test_auto_paths_have_the_plain_gradients(arch, attention, kind):
    batch = batch_of(pairs(1)) if kind == "pairs" else list_batch(1)
    weights = torch.linspace(-1, 1, batch["input_ids"].shape[0])
    grads = {}
    settings = {
        "plain": dict(fused_lm_head="off", shared_prompt="off"),
        "auto": {},
        "packed": PACKED,
        "packed, prompt twice": dict(shared_prompt="off", **PACKED),
    }
    for mode, kwargs in settings.items():
        module = PreferenceModule(tiny_model(arch, attention), reference="none", loss="simpo", **kwargs)
        module.configure_model()
        (module.completion_logps(module.policy, batch) * weights).sum().backward()
        grads[mode] = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
    for mode in list(settings)[1:]:
        assert grads[mode].keys() == grads["plain"].keys()
        for name, plain in grads["plain"].items():
            scale = plain.abs().max().clamp(min=1e-6)
            assert (grads[mode][name] - plain).abs().max() <= 1e-4 * scale, (mode, name)


@pytest.mark.parametrize("arch, attention", [("gemma2", "eager"), ("mistral", "sdpa"), ("llama", "sdpa")])
def test_in_bf16_the_fast_paths_err_no_more_than_the_plain_path(arch, attention):
    batch = batch_of(pairs(2))
    reference = PreferenceModule(
        tiny_model(arch, attention), reference="none", loss="simpo", fused_lm_head="off", shared_prompt="off"
    )
    reference.configure_model()
    errors = {}
    for fast in (True, False):
        module = PreferenceModule(
            tiny_model(arch, attention, dtype=torch.bfloat16),
            reference="none",
            loss="simpo",
            fused_lm_head="auto" if fast else "off",
            shared_prompt="auto" if fast else "off",
        )
        module.configure_model()
        path = module.path_for(module.policy)
        assert (path.fused, path.shared) == (fast, fast)
        with torch.no_grad():
            errors[fast] = (
                module.completion_logps(module.policy, batch) - reference.completion_logps(reference.policy, batch)
            ).abs()
    assert errors[True].max() <= errors[False].max() * 1.5 + 0.05, (errors[True], errors[False])


def test_on_is_on_or_a_one_line_error():
    with pytest.raises(
        FastPathError,
        match=r"^shared_prompt: on is not exact for BloomForCausalLM: BloomForCausalLM "
        r"uses ALiBi biases computed from the 2D mask$",
    ):
        PreferenceModule(
            tiny_model("bloom", "eager"), reference="none", loss="simpo", shared_prompt="on"
        ).configure_model()
    with pytest.raises(FastPathError, match=r"^shared_prompt: on is not exact for Lfm2ForCausalLM: .*Lfm2ShortConv"):
        PreferenceModule(tiny_model("lfm2"), reference="none", loss="simpo", shared_prompt="on").configure_model()
    m = PreferenceModule(
        tiny_model("gemma2", "eager"), reference="none", loss="simpo", fused_lm_head="on", shared_prompt="auto"
    )
    m.configure_model()
    path = m.path_for(m.policy)
    assert path.fused and path.shared and path.transform.softcap == 3.0  # `on` for one path leaves `auto` to the other


def test_an_unknown_logit_transform_turns_the_fused_head_off():
    from transformers import LlamaForCausalLM

    class Tempered(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=None, **kwargs):
            outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
            hidden_states = outputs.last_hidden_state
            logits = self.lm_head(hidden_states)
            logits = logits / 0.7
            loss = None
            from transformers.modeling_outputs import CausalLMOutputWithPast

            return CausalLMOutputWithPast(loss=loss, logits=logits)

    base = tiny_model("llama")
    model = Tempered(base.config)
    model.load_state_dict(base.state_dict())
    m = PreferenceModule(model.eval(), reference="none", loss="simpo")
    m.configure_model()
    path = m.path_for(m.policy)
    assert not path.fused and "transforms its logits" in path.fused_reason
    assert_logps_are_naive(m)
    with pytest.raises(FastPathError, match="fused_lm_head: on is not exact for Tempered"):
        PreferenceModule(model, reference="none", loss="simpo", fused_lm_head="on").configure_model()
