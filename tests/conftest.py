import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
TOKENIZER = ASSETS / "tokenizer"
TINY_MODEL = ASSETS / "tiny-llama"
TRAIN = ASSETS / "data" / "train.jsonl"
VAL = ASSETS / "data" / "val.jsonl"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test tokenizes into its own cache directory."""
    monkeypatch.setenv("PREFLIGHT_CACHE", str(tmp_path / "preflight-cache"))


@pytest.fixture(scope="session")
def tokenizer():
    from preflight.pretrained import load_tokenizer

    return load_tokenizer(str(TOKENIZER))
