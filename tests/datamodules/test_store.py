"""Tokenized splits on disk: the same ids whatever the number of processes, read in bounded memory,
streamed sources, and one tokenization per machine."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

import preflight.datamodules.splits as splits
from preflight import PreferenceDataModule
from preflight.pretrained import load_tokenizer
from preflight.datamodules.tokenization import tokenize_example, truncate
from preflight.datamodules.formats import column_names, parse_example
from preflight.datamodules.sources import Source
from tests.conftest import ROOT, TOKENIZER, TRAIN, VAL


def ids(dm, split="train"):
    return [(p.index, p.prompt_ids, p.chosen_ids, p.rejected_ids, p.margin) for p in dm.dataset(split).pairs]


def one_at_a_time(path, max_length=256):
    """The reference: each row parsed and tokenized by itself, in order (the pre-store code path)."""
    tokenizer = load_tokenizer(str(TOKENIZER))
    names, out = column_names(None), []
    for row in Source(str(path)).rows():
        pair = truncate(tokenize_example(tokenizer, parse_example(row, names)), max_length, None, "keep_end")
        if pair is not None:
            out.append((pair.index, pair.prompt_ids, pair.chosen_ids, pair.rejected_ids, pair.margin))
    return out


@pytest.mark.parametrize("num_proc", [1, 2])
def test_ids_do_not_depend_on_the_number_of_processes(num_proc, monkeypatch):
    monkeypatch.setattr(splits, "CHUNK", 300)  # several chunks, so the workers share the file
    dm = PreferenceDataModule(str(TOKENIZER), train=str(TRAIN), num_proc=num_proc, max_length=256, use_cache=False)
    assert ids(dm) == one_at_a_time(TRAIN)


def test_bad_rows_are_reported_the_same_with_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(splits, "CHUNK", 2)
    rows = [json.loads(line) for line in open(VAL)][:9]
    lines = [json.dumps(r) for r in rows]
    lines[3] = '{"prompt": "Hi", "chosen": " yes"}'
    lines[7] = "{not json"
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    dm = PreferenceDataModule(
        str(TOKENIZER), train=str(tmp_path / "bad.jsonl"), num_proc=2, on_bad_rows="skip", use_cache=False
    )
    report = dm.dataset("train") and dm.reports["train"]
    assert (report.rows, report.kept, report.bad) == (9, 7, 2)
    assert report.first_problems[0].startswith(f"{tmp_path / 'bad.jsonl'}, line 4: missing field 'rejected' (the row's")
    assert report.first_problems[1].startswith(f"{tmp_path / 'bad.jsonl'}, line 8: invalid JSON")
    assert [p.index for p in dm.dataset("train").pairs] == [0, 1, 2, 4, 5, 6, 8]


def test_the_source_is_read_in_chunks_while_the_store_is_written(tmp_path, monkeypatch):
    """Bounded memory: rows are read while earlier chunks are already on disk, never all at once."""
    monkeypatch.setattr(splits, "CHUNK", 100)
    events = []
    real_rows, real_add = Source.rows, splits.PairStoreWriter.add

    def rows(self):
        for row in real_rows(self):
            events.append("read")
            yield row

    def add(self, pairs):
        events.append(("write", len(pairs)))
        return real_add(self, pairs)

    monkeypatch.setattr(Source, "rows", rows)
    monkeypatch.setattr(splits.PairStoreWriter, "add", add)
    PreferenceDataModule(str(TOKENIZER), train=str(TRAIN), num_proc=1, use_cache=False).dataset("train")
    writes = [i for i, e in enumerate(events) if isinstance(e, tuple)]
    assert max(e[1] for e in events if isinstance(e, tuple)) <= 100
    assert writes[0] < events.index("read") + 200 and events[-1] != "read"  # written long before the last row is read
    assert events.count("read") == 2000


def test_a_streaming_hub_dataset_is_read_in_stream_order(monkeypatch):
    rows = [json.loads(line) for line in open(VAL)][:30]
    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False, **kwargs):
        calls.append(streaming)
        return (
            datasets.IterableDataset.from_generator(lambda: iter(rows))
            if streaming
            else datasets.Dataset.from_list(rows)
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    streamed = PreferenceDataModule(str(TOKENIZER), train="someone/prefs", streaming=True, use_cache=False)
    whole = PreferenceDataModule(str(TOKENIZER), train=rows, use_cache=False)
    assert ids(streamed) == ids(whole) and calls == [True]


def test_a_ddp_fit_tokenizes_once_per_machine(tmp_path):
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "preflight"),
            "fit",
            "--config",
            str(ROOT / "configs/dpo.yaml"),
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--data.batch_size",
            "4",
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PREFLIGHT_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("preflight: data: tokenized assets/data/train.jsonl: 2000 pairs") == 1
    assert output.count("preflight: data: tokenized assets/data/val.jsonl: 200 pairs") == 1
    assert len([p for p in (tmp_path / "cache" / "tokenized").iterdir() if p.is_dir()]) == 2


def test_prepare_data_tokenizes_into_the_cache_and_setup_only_reads_it(tmp_path, monkeypatch):
    """Lightning runs prepare_data on one process per machine; every process's setup then reads what it wrote."""

    kwargs = dict(train=str(TRAIN), val=str(VAL), test=str(VAL), cache_dir=str(tmp_path / "cache"))
    first = PreferenceDataModule(str(TOKENIZER), **kwargs)
    first.prepare_data()
    assert first.datasets == {}  # nothing kept in the preparing process: setup reads it like every other
    folders = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(folders) == 2  # train, and val (which test shares: the same file and settings)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("setup tokenized instead of reading the cache")

    second = PreferenceDataModule(str(TOKENIZER), **kwargs)
    monkeypatch.setattr(second, "_tokenize_source", no_tokenizing)
    second.setup("fit")
    assert len(second.datasets["train"]) == len(TRAIN.read_text().splitlines())
    assert [p.chosen_ids for p in second.datasets["val"].pairs] == [
        p.chosen_ids
        for p in PreferenceDataModule(str(TOKENIZER), train=str(VAL), use_cache=False).dataset("train").pairs
    ]
