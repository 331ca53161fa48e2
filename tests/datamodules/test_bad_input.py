"""Every kind of bad input: a one-line PreferenceDataError naming the file, the line and the problem."""

import json

import pytest

from preflight.datamodules import PreferenceDataError, PreferenceDataModule
from tests.conftest import TOKENIZER

GOOD = {"prompt": "Hi", "chosen": " yes", "rejected": " no"}


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def setup_error(train, **kw) -> str:
    dm = PreferenceDataModule(str(TOKENIZER), train=str(train) if not isinstance(train, list) else train, **kw)
    with pytest.raises(PreferenceDataError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ({"prompt": "Hi", "chosen": " yes"}, "missing field 'rejected'"),
        ({"prompt": "Hi", "chosen": None, "rejected": " no"}, "field 'chosen' is null"),
        ({"prompt": "Hi", "chosen": 42, "rejected": " no"}, "field 'chosen' must be a string or a list"),
        (
            {
                "prompt": [{"role": "user"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "field 'prompt', message 1: 'content' is missing",
        ),
        (
            {"prompt": "Hi", "chosen": [{"role": "assistant", "content": "a"}], "rejected": " no"},
            "mixes strings and message lists",
        ),
        ('{"prompt": "Hi", "chosen": " yes" "rejected": " no"}', "invalid JSON"),
        ({"prompt": "Hi", "chosen": " yes", "rejected": " no", "margin": "high"}, "must be a number"),
        ([1, 2, 3], "expected an object"),
    ],
)
def test_bad_row_names_file_line_and_problem(tmp_path, bad_line, problem):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, bad_line, GOOD])
    message = setup_error(path)
    assert f"{path}, line 3: " in message and problem in message


def test_blank_lines_keep_line_numbers_true(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({"prompt": "x"}) + "\n")
    assert f"{path}, line 3: missing field 'chosen'" in setup_error(path)


def test_csv_and_json_rows_are_located(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("prompt,chosen,rejected\nHi, yes, no\nHo, sure\n")
    assert f"{csv_path}, line 3: field 'rejected' is null" in setup_error(csv_path)
    json_path = tmp_path / "pairs.json"
    json_path.write_text(json.dumps([GOOD, {"prompt": "Hi", "rejected": "x"}]))
    assert f"{json_path}, row 2: missing field 'chosen'" in setup_error(json_path)


def test_a_byte_order_mark_is_not_data(tmp_path):
    """UTF-8 files saved with a byte-order mark read as without it: JSONL, JSON, and a CSV's first header."""
    from preflight.datamodules.sources import Source

    bom = b"\xef\xbb\xbf"
    files = {
        "pairs.jsonl": json.dumps(GOOD).encode() + b"\n",
        "pairs.json": json.dumps([GOOD]).encode(),
        "pairs.csv": b"prompt,chosen,rejected\nHi, yes, no\n",
    }
    for name, body in files.items():
        (tmp_path / name).write_bytes(bom + body)
        (row,) = Source(str(tmp_path / name)).rows()
        assert {k: row.value[k] for k in GOOD} == GOOD, name
    (tmp_path / "late.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + bom + json.dumps(GOOD).encode())
    assert f"{tmp_path / 'late.jsonl'}, line 2: invalid JSON" in setup_error(
        tmp_path / "late.jsonl"
    )  # only at the start


def test_in_memory_rows_are_located():
    assert "in-memory data, row 2: missing field 'chosen'" in setup_error([GOOD, {"prompt": "x", "rejected": "y"}])


def test_missing_file_unknown_type_and_empty(tmp_path):
    assert setup_error(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: file not found"
    txt = tmp_path / "pairs.txt"
    txt.write_text("hello")
    assert "unknown file type '.txt'" in setup_error(txt)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert setup_error(empty) == f"{empty}: the dataset is empty (no rows)"


def test_skip_mode_skips_and_reports(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, {"prompt": "Hi"}, GOOD, "not json", GOOD])
    dm = PreferenceDataModule(str(TOKENIZER), train=str(path), on_bad_rows="skip")
    dm.setup("fit")
    report = dm.reports["train"]
    assert len(dm.datasets["train"]) == 3 and report.bad == 2
    assert report.first_problems[0].startswith(f"{path}, line 2: missing field")
    assert report.first_problems[1].startswith(f"{path}, line 4: invalid JSON")
    assert "2 bad rows skipped" in report.summary()


def test_skip_mode_with_nothing_left_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Hi"}])
    assert "no usable pairs" in setup_error(path, on_bad_rows="skip")


def test_nothing_invalid_reaches_a_tensor(tmp_path):
    rows = [GOOD, {"prompt": "Hi", "chosen": 3, "rejected": " no"}, {"prompt": "Hi", "chosen": " a", "rejected": " a"}]
    dm = PreferenceDataModule(str(TOKENIZER), train=rows, on_bad_rows="skip", batch_size=8)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0]["index"].tolist() == [0]


def test_unknown_column_mapping_target():
    dm = PreferenceDataModule(str(TOKENIZER), train=[GOOD], columns={"q": "question"})
    with pytest.raises(PreferenceDataError, match="columns: 'q' maps to 'question'"):
        dm.setup("fit")
