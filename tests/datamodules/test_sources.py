"""The same pairs from every supported source give the same tensors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset

from preflight.datamodules import PreferenceDataError, PreferenceDataModule
from tests.conftest import TOKENIZER

ROWS = [
    {"prompt": "Hi", "chosen": " yes", "rejected": " no"},
    {"prompt": "Is it blue?", "chosen": " It is.", "rejected": " Go away."},
]


def batch(train):
    dm = PreferenceDataModule(str(TOKENIZER), train=train, batch_size=2, group_by_length=False)
    dm.setup("fit")
    return dm.collator(dm.datasets["train"].pairs)


@pytest.fixture
def reference():
    return batch(ROWS)


def test_jsonl_json_parquet_csv_and_datasets_agree(tmp_path, reference):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text(
        "prompt,chosen,rejected\n" + "\n".join(f'"{r["prompt"]}","{r["chosen"]}","{r["rejected"]}"' for r in ROWS)
    )
    sources = [str(tmp_path / f"d.{ext}") for ext in ("jsonl", "json", "parquet", "csv")] + [Dataset.from_list(ROWS)]
    for source in sources:
        got = batch(source)
        assert torch.equal(got["input_ids"], reference["input_ids"]), source
        assert torch.equal(got["completion_mask"], reference["completion_mask"]), source


def test_an_unreachable_hub_id_is_a_one_line_error():
    dm = PreferenceDataModule(str(TOKENIZER), train="no-such-owner/no-such-dataset")
    with pytest.raises(PreferenceDataError) as err:
        dm.setup("fit")
    assert str(err.value).startswith(
        "no-such-owner/no-such-dataset: not a file, and loading it as a Hugging Face dataset failed"
    )
    assert "\n" not in str(err.value)
