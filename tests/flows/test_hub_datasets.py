"""Hugging Face datasets: local folders and hub ids (offline: the hub is stood in for by a local dataset)."""

import json

import datasets
import pytest

from preflight import PreferenceDataModule
from preflight.datamodules.sources import Source
from tests.conftest import ROOT, TOKENIZER, VAL

ROWS = [json.loads(line) for line in open(VAL)][:40]


def pairs_of(dm, split="train"):
    return [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in dm.dataset(split).pairs]


@pytest.fixture
def expected():
    dm = PreferenceDataModule(str(TOKENIZER), train=ROWS, use_cache=False)
    return pairs_of(dm)


def test_a_dataset_saved_to_disk_loads_by_its_folder(tmp_path, expected):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "prefs.v1")
    dm = PreferenceDataModule(str(TOKENIZER), train=str(tmp_path / "prefs.v1"), use_cache=False)
    assert pairs_of(dm) == expected
    assert dm.reports["train"].source == str(tmp_path / "prefs.v1")


def test_a_folder_of_data_files_loads_through_load_dataset(tmp_path, expected):
    folder = tmp_path / "my.data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    dm = PreferenceDataModule(str(TOKENIZER), train=str(folder), val=str(folder), use_cache=False)
    assert pairs_of(dm) == expected
    assert len(dm.dataset("val")) == 5  # val_split defaults to "test"


@pytest.mark.parametrize(
    "hub_id", ["trl-lib/ultrafeedback_binarized", "allenai/llama-3.1-tulu-3-8b-preference-mixture"]
)
def test_hub_ids_go_to_load_dataset_with_split_and_subset(monkeypatch, expected, hub_id):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert Source(hub_id).kind() == "hub"
    dm = PreferenceDataModule(str(TOKENIZER), train=hub_id, subset="default", split="train_prefs", use_cache=False)
    assert pairs_of(dm) == expected
    assert calls == [(hub_id, "default", "train_prefs")]
    problem = [{"prompt": "Hi", "chosen": " yes"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(problem))
    with pytest.raises(ValueError, match=rf"^{hub_id}\[train\], row 1: missing field 'rejected' \(the row's fields"):
        PreferenceDataModule(str(TOKENIZER), train=hub_id, use_cache=False).dataset("train")


def test_the_shipped_ultrafeedback_config_reads_its_hub_id(monkeypatch):
    from tests.test_configs import ParseOnly
    from preflight.cli import build_cli

    monkeypatch.chdir(ROOT)
    config = build_cli(
        ["--config", str(ROOT / "configs/smollm2_ultrafeedback_dpo.yaml")], run=False, cli_class=ParseOnly
    ).config
    source = Source(config.data.train, config.data.split)
    assert source.kind() == "hub" and source.spec == "trl-lib/ultrafeedback_binarized"


def test_an_unknown_local_file_type_is_still_refused(tmp_path):
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown file type '.txt'"):
        Source(str(tmp_path / "data.txt")).kind()
