"""Multi-turn conversational pairs tokenize as TRL's DPOTrainer tokenizes them, with real chat templates."""

import pytest

from preflight import PreferenceDataModule
from tests.conftest import ASSETS, TOKENIZER

TEMPLATES = sorted((ASSETS / "chat_templates").glob("*.jinja"))


def chat(role, content):
    return {"role": role, "content": content}


ROWS = [
    {
        "prompt": [
            chat("system", "Be brief."),
            chat("user", "Is the lamp in stock?"),
            chat("assistant", "It is."),
            chat("user", "And in blue?"),
        ],
        "chosen": [chat("assistant", "Yes, in blue too. Happy to help!")],
        "rejected": [chat("assistant", "Obviously. Read the page.")],
    },
    {
        "prompt": [chat("user", "Hi!"), chat("assistant", "Hello, how can I help?"), chat("user", "Price of the mug?")],
        "chosen": [chat("assistant", "It is 12 euros. Thank you for asking!")],
        "rejected": [chat("assistant", "12. Stop asking.")],
    },
    {
        "chosen": [chat("user", "Do you ship abroad?"), chat("assistant", "We do, gladly.")],  # implicit prompt
        "rejected": [chat("user", "Do you ship abroad?"), chat("assistant", "Yes. Obviously.")],
    },
]


def trl_tokenized(rows, tokenizer, tmp_path):
    pytest.importorskip("trl", reason="compares with TRL, which is not installed")
    from trl.data_utils import extract_prompt

    from tests.helpers import trl_dpo_trainer

    rows = [row if "prompt" in row else extract_prompt(row) for row in rows]  # TRL's own split of an implicit prompt
    trainer = trl_dpo_trainer(rows, tokenizer, tmp_path)
    return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in trainer.train_dataset]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_multi_turn_pairs_equal_trl(template, tmp_path):
    data = PreferenceDataModule(
        str(TOKENIZER), train=ROWS, chat_template=str(template), max_length=None, use_cache=False
    )
    ours = [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in data.dataset("train").pairs]
    theirs = trl_tokenized(ROWS, data.tokenizer, tmp_path)
    assert ours == theirs
    tokenizer = data.tokenizer
    for (prompt, chosen, _), row in zip(ours, ROWS[:2]):
        text = tokenizer.decode(prompt)
        assert text.count(row["prompt"][-1]["content"]) == 1 and "assistant" in text[-30:]  # the generation prompt
        assert row["chosen"][0]["content"].split()[0] in tokenizer.decode(chosen)
    if template.stem == "bos_header":
        assert ours[0][0][0] == tokenizer.bos_token_id and ours[0][0].count(tokenizer.bos_token_id) == 1
    if template.stem == "system_default":
        assert "You are a helpful shop assistant." in tokenizer.decode(ours[1][0])  # no system message in row 2
        assert "You are a helpful shop assistant." not in tokenizer.decode(ours[0][0])  # row 1 has its own


def test_a_missing_chat_template_file_is_one_line():
    with pytest.raises(ValueError, match="^chat_template 'nope.jinja': file not found$"):
        PreferenceDataModule(str(TOKENIZER), train=ROWS, chat_template="nope.jinja").dataset("train")
