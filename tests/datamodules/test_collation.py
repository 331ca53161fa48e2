"""Exact tensors for hand-built pairs in each format, and truncation."""

import torch

from preflight.datamodules import PreferenceCollator, PreferenceDataModule
from preflight.datamodules.formats import extract_prompt
from tests.conftest import TOKENIZER


def ids(tokenizer, text, bos=True):
    out = tokenizer(text, add_special_tokens=bos)["input_ids"]
    return list(out)


def module(rows, **kw):
    dm = PreferenceDataModule(str(TOKENIZER), train=rows, batch_size=len(rows), group_by_length=False, **kw)
    dm.setup("fit")
    return dm


def one_batch(dm):
    pairs = dm.datasets["train"].pairs
    return dm.collator(pairs)


def expected_batch(prompt, chosen, rejected, pad):
    """The documented format built by hand from token lists."""
    rows = [prompt + chosen, prompt + rejected]
    T = max(map(len, rows))
    input_ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows])
    attention = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    completion = torch.tensor([[0] * len(prompt) + [1] * (len(r) - len(prompt)) + [0] * (T - len(r)) for r in rows])
    return input_ids, attention, completion


def test_standard_format_exact_tensors(tokenizer):
    dm = module(
        [{"prompt": "Customer: Is the lamp in stock?\nAssistant:", "chosen": " Yes, gladly.", "rejected": " No."}]
    )
    batch = one_batch(dm)
    eos = tokenizer.eos_token_id
    prompt = ids(tokenizer, "Customer: Is the lamp in stock?\nAssistant:")
    assert prompt[0] == tokenizer.bos_token_id  # BOS as the tokenizer adds it
    chosen = ids(tokenizer, " Yes, gladly.", bos=False) + [eos]
    rejected = ids(tokenizer, " No.", bos=False) + [eos]
    input_ids, attention, completion = expected_batch(prompt, chosen, rejected, tokenizer.pad_token_id)
    assert torch.equal(batch["input_ids"], input_ids)
    assert torch.equal(batch["attention_mask"], attention)
    assert torch.equal(batch["completion_mask"], completion)
    assert batch["prompt_lengths"].tolist() == [len(prompt)]
    assert batch["chosen_lengths"].tolist() == [len(chosen)]
    assert batch["rejected_lengths"].tolist() == [len(rejected)]
    assert "margin" not in batch


def test_implicit_prompt_is_the_longest_common_prefix(tokenizer):
    rows = [{"chosen": "Q: colour of the sky? A: blue", "rejected": "Q: colour of the sky? A: green"}]
    assert extract_prompt(rows[0]["chosen"], rows[0]["rejected"]) == ("Q: colour of the sky? A:", " blue", " green")
    batch = one_batch(module(rows))
    explicit = one_batch(module([{"prompt": "Q: colour of the sky? A:", "chosen": " blue", "rejected": " green"}]))
    for key in ("input_ids", "attention_mask", "completion_mask", "prompt_lengths"):
        assert torch.equal(batch[key], explicit[key])


def test_conversational_format_uses_the_chat_template(tokenizer):
    prompt = [{"role": "user", "content": "Is the tent in stock?"}]
    chosen = [{"role": "assistant", "content": "Yes, happy to help."}]
    rejected = [{"role": "assistant", "content": "Go away."}]
    batch = one_batch(module([{"prompt": prompt, "chosen": chosen, "rejected": rejected}]))
    # by hand: the template is <|role|>content</s> per message, and <|assistant|> as generation prompt
    p = ids(tokenizer, "<|user|>Is the tent in stock?</s><|assistant|>", bos=False)
    c = ids(tokenizer, "Yes, happy to help.</s>", bos=False)
    r = ids(tokenizer, "Go away.</s>", bos=False)
    input_ids, attention, completion = expected_batch(p, c, r, tokenizer.pad_token_id)
    assert torch.equal(batch["input_ids"], input_ids)
    assert torch.equal(batch["completion_mask"], completion)
    # implicit prompt in conversations: the shared messages
    implicit = one_batch(module([{"chosen": prompt + chosen, "rejected": prompt + rejected}]))
    assert torch.equal(implicit["input_ids"], input_ids)


def test_margin_and_columns_mapping(tokenizer):
    rows = [
        {"question": "Hi", "good": " yes", "bad": " no", "score": 1.5},
        {"question": "Yo", "good": " sure", "bad": " nope", "score": "0.25"},
    ]
    dm = module(rows, columns={"question": "prompt", "good": "chosen", "bad": "rejected", "score": "margin"})
    batch = one_batch(dm)
    assert batch["margin"].tolist() == [1.5, 0.25] and batch["margin"].dtype == torch.float32
    assert batch["index"].tolist() == [0, 1]


def test_pad_to_multiple_of(tokenizer):
    pairs = module([{"prompt": "Hi", "chosen": " yes", "rejected": " no"}]).datasets["train"].pairs
    batch = PreferenceCollator(tokenizer.pad_token_id, pad_to_multiple_of=16)(pairs)
    assert batch["input_ids"].shape[1] == 16
    assert batch["attention_mask"].sum().item() == len(pairs[0].prompt_ids) * 2 + len(pairs[0].chosen_ids) + len(
        pairs[0].rejected_ids
    )


LONG_PROMPT = "one two three four five six seven eight nine ten eleven twelve"


def test_truncation_keep_end_keeps_the_part_next_to_the_answer(tokenizer):
    full = ids(tokenizer, LONG_PROMPT)
    dm = module([{"prompt": LONG_PROMPT, "chosen": " yes", "rejected": " no"}], max_prompt_length=5)
    pair = dm.datasets["train"].pairs[0]
    assert pair.prompt_ids == full[-5:]
    dm = module(
        [{"prompt": LONG_PROMPT, "chosen": " yes", "rejected": " no"}], max_prompt_length=5, truncation="keep_start"
    )
    assert dm.datasets["train"].pairs[0].prompt_ids == full[:5]


def test_truncation_cuts_completions_to_max_length(tokenizer):
    chosen = " a very long and polite answer indeed"
    dm = module([{"prompt": "Hi", "chosen": chosen, "rejected": " no"}], max_length=6)
    pair = dm.datasets["train"].pairs[0]
    prompt = ids(tokenizer, "Hi")
    assert pair.prompt_ids == prompt
    assert pair.chosen_ids == (ids(tokenizer, chosen, bos=False) + [tokenizer.eos_token_id])[: 6 - len(prompt)]
    assert len(pair.prompt_ids) + len(pair.chosen_ids) == 6


def test_pairs_left_without_a_completion_are_dropped_and_counted():
    rows = [
        {"prompt": LONG_PROMPT, "chosen": " yes", "rejected": " no"},
        {"prompt": "Hi", "chosen": " yes", "rejected": " no"},
    ]
    dm = module(rows, max_length=4)
    assert len(dm.datasets["train"]) == 1
    assert dm.reports["train"].truncated_away == 1
    assert dm.datasets["train"].pairs[0].index == 1


def test_identical_chosen_and_rejected_are_dropped_and_reported():
    rows = [
        {"prompt": "Hi", "chosen": " same", "rejected": " same"},
        {"prompt": "Hi", "chosen": " yes", "rejected": " no"},
    ]
    dm = module(rows)
    assert len(dm.datasets["train"]) == 1 and dm.reports["train"].identical == 1
    assert "1 with chosen identical to rejected dropped" in dm.reports["train"].summary()
    kept = module(rows, drop_identical=False)
    assert len(kept.datasets["train"]) == 2


def test_val_fraction_is_seeded_and_disjoint():
    rows = [{"prompt": f"P{i}", "chosen": " yes", "rejected": " no"} for i in range(20)]
    a, b = module(rows, val_fraction=0.25, seed=3), module(rows, val_fraction=0.25, seed=3)
    val_a = [p.index for p in a.datasets["val"].pairs]
    assert len(val_a) == 5 and val_a == [p.index for p in b.datasets["val"].pairs]
    assert not set(val_a) & {p.index for p in a.datasets["train"].pairs}


def test_token_ids_equal_trl_dpotrainer(tmp_path, tokenizer):
    """Standard-format pairs: the same ids and masks as TRL's DPOTrainer and its collator."""
    import json

    from tests.conftest import VAL
    from tests.helpers import trl_dpo_trainer

    rows = [json.loads(line) for line in open(VAL)][:12]
    rows.append({"prompt": "Hi there", "chosen": " yes</s>", "rejected": "no way"})  # EOS present, no leading space
    trainer = trl_dpo_trainer(rows, tokenizer, tmp_path)
    theirs = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    ours = one_batch(module(rows, max_length=None))
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(ours[key], theirs[key]), key
