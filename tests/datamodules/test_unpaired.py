"""Unpaired rows (prompt, completion, label): read from every format into the store, checked row by row with located
errors, made from pairs by ``unpair``, batched with the mismatched rows KTO's reference point needs."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preflight.datamodules import PreferenceDataError
from tests.datamodules.test_lists import expected_ids, module, stored, write_jsonl

ROWS = [
    {"prompt": "Q: one\nA:", "completion": " thanks, gladly", "label": True},
    {"prompt": "Q: two\nA:", "completion": " whatever", "label": False},
    {"prompt": "Q: three\nA:", "completion": " happy to help", "label": True},
    {"prompt": "Q: four\nA:", "completion": " figure it out", "label": False},
    {"prompt": "Q: five\nA:", "completion": " of course", "label": True},
]


def test_jsonl_parquet_and_datasets_store_each_row_as_its_completion_after_its_prompt(tmp_path):
    data = module(tmp_path, str(write_jsonl(tmp_path / "u.jsonl", ROWS)))
    items = stored(data)
    for row, item in zip(ROWS, items):
        prompt_ids, completion_ids = expected_ids(data.tokenizer, row["prompt"], row["completion"])
        assert (item.prompt_ids, item.completion_ids, item.scores) == (
            prompt_ids,
            [completion_ids],
            [1.0 if row["label"] else 0.0],
        )
    assert data.describe("fit") == f"train {tmp_path / 'u.jsonl'} (5 unpaired: 3 desirable, 2 undesirable), val: none"
    assert data.data_kind("fit") == "unpaired"
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "u.parquet")
    assert stored(module(tmp_path, str(tmp_path / "u.parquet"))) == items
    from datasets import Dataset

    assert stored(module(tmp_path, Dataset.from_list(ROWS))) == items


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"prompt": "Q", "completion": " a", "label": "yes"},
            r"u\.jsonl, line 2: field 'label' must be true or false, got 'yes'",
        ),
        ({"prompt": "Q", "completion": None, "label": True}, r"u\.jsonl, line 2: field 'completion' is null"),
        ({"prompt": "Q", "chosen": " a", "rejected": " b"}, r"u\.jsonl, line 2: a row of pairs in a split of unpaired"),
        (
            {"prompt": [{"role": "user", "content": "Q"}], "completion": " a", "label": True},
            r"u\.jsonl, line 2: mixes a string and a message list across prompt and completion",
        ),
    ],
)
def test_bad_rows_are_located_and_skippable(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "u.jsonl", [ROWS[0], bad, ROWS[1]])
    with pytest.raises(PreferenceDataError, match=message):
        module(tmp_path, str(path)).setup("fit")
    skipping = module(tmp_path, str(path), on_bad_rows="skip")
    skipping.setup("fit")
    assert len(stored(skipping)) == 2 and skipping.reports["train"].bad == 1


def test_unpair_turns_each_pair_into_a_desirable_and_an_undesirable_row(tmp_path):
    pairs = [
        {"prompt": "Q: one\nA:", "chosen": " thanks", "rejected": " ugh"},
        {"prompt": "Q: two\nA:", "chosen": " gladly", "rejected": " whatever"},
    ]
    data = module(tmp_path, str(write_jsonl(tmp_path / "p.jsonl", pairs)), unpair=True)
    items = stored(data)
    expected = [(p["prompt"], c, label) for p in pairs for c, label in ((p["chosen"], 1.0), (p["rejected"], 0.0))]
    assert [item.index for item in items] == [0, 1, 2, 3]
    for (prompt, completion, label), item in zip(expected, items):
        prompt_ids, completion_ids = expected_ids(data.tokenizer, prompt, completion)
        assert (item.prompt_ids, item.completion_ids, item.scores) == (prompt_ids, [completion_ids], [label])
    assert data.reports["train"].rows == 4 and data.reports["train"].kept == 4
    # the same file without unpair is pairs, and the two are cached apart
    assert module(tmp_path, str(tmp_path / "p.jsonl")).data_kind("fit") == "pairs"


def test_a_batch_holds_each_row_and_its_prompt_with_the_previous_rows_completion(tmp_path):
    data = module(tmp_path, str(write_jsonl(tmp_path / "u.jsonl", ROWS)), batch_size=5, group_by_length=False)
    data.setup("fit")
    (batch,) = list(data.train_dataloader())
    items = {item.index: item for item in stored(data)}
    order = batch["index"].tolist()
    assert sorted(order) == [0, 1, 2, 3, 4] and int(batch["step_pairs"]) == 5
    ids, mask = batch["input_ids"], batch["completion_mask"].bool()
    kl = batch["kl_rows"].tolist()
    assert kl == [False, True] * 5
    for i, index in enumerate(order):
        matched, mismatched = ids[2 * i][mask[2 * i]].tolist(), ids[2 * i + 1][mask[2 * i + 1]].tolist()
        previous = items[order[i - 1]]  # the first row takes the last row's completion, as TRL rotates
        assert matched == items[index].completion_ids[0] and mismatched == previous.completion_ids[0]
        prompt = items[index].prompt_ids
        assert ids[2 * i + 1][: len(prompt)].tolist() == prompt
        assert bool(batch["labels"][i]) == (items[index].scores[0] == 1.0)
