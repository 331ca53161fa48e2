"""Batch order (seeded, world-size independent, resumable), length grouping, and the cache."""

import json
import time

import torch

from preflight.datamodules import PreferenceBatchSampler, PreferenceDataModule
from tests.conftest import TOKENIZER, TRAIN


def lengths(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(20, 200, (n,), generator=g)).tolist()


def test_batch_order_is_determined_by_the_seed():
    a = list(PreferenceBatchSampler(lengths(), 8, seed=5))
    b = list(PreferenceBatchSampler(lengths(), 8, seed=5))
    c = list(PreferenceBatchSampler(lengths(), 8, seed=6))
    assert a == b and a != c
    assert sorted(i for batch in a for i in batch) == list(range(400))  # every pair exactly once


def test_epochs_reshuffle():
    sampler = PreferenceBatchSampler(lengths(), 8, seed=5)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_global_batches_do_not_depend_on_the_world_size():
    single = list(PreferenceBatchSampler(lengths(), 8, seed=1))
    ranks = [list(PreferenceBatchSampler(lengths(), 4, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for whole, part0, part1 in zip(single, *ranks):
        assert part0 + part1 == whole


def test_uneven_last_batch_is_split_evenly_across_ranks():
    ranks = [list(PreferenceBatchSampler([5] * 11, 4, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(b) for b in ranks[0]] == [4, 2] and [len(b) for b in ranks[1]] == [4, 1]


def padding_fraction(sampler, lens):
    real = padded = 0
    for batch in sampler:
        longest = max(lens[i] for i in batch)
        real += sum(lens[i] for i in batch)
        padded += longest * len(batch)
    return 1 - real / padded


def test_length_grouping_reduces_padding():
    lens = lengths(2000, seed=3)
    random_batches = padding_fraction(PreferenceBatchSampler(lens, 16, group_by_length=False, seed=0), lens)
    grouped = padding_fraction(PreferenceBatchSampler(lens, 16, group_by_length=True, seed=0), lens)
    # uniform lengths in [20, 200): about 40% padding at random, a few percent grouped
    assert random_batches > 0.3
    assert grouped < 0.05
    # also on the shipped data, with real token counts
    dm = PreferenceDataModule(str(TOKENIZER), train=str(TRAIN))
    dm.setup("fit")
    real = dm.datasets["train"].lengths
    assert padding_fraction(PreferenceBatchSampler(real, 16, group_by_length=True), real) < 0.5 * padding_fraction(
        PreferenceBatchSampler(real, 16, group_by_length=False), real
    )


def test_sampler_resumes_mid_epoch():
    full = list(PreferenceBatchSampler(lengths(), 8, seed=2))
    sampler = PreferenceBatchSampler(lengths(), 8, seed=2)
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(7)]
    state = sampler.state_dict()
    resumed = PreferenceBatchSampler(lengths(), 8, seed=2)
    resumed.load_state_dict(state)
    assert consumed + list(resumed) == full


def test_cache_round_trip(tmp_path):
    kw = dict(train=str(TRAIN), cache_dir=str(tmp_path / "cache"))
    first = PreferenceDataModule(str(TOKENIZER), **kw)
    first.setup("fit")
    entries = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(entries) == 1
    assert sorted(p.name for p in entries[0].iterdir()) == ["ids.bin", "margin.npy", "meta.json", "pairs.npy"]
    json.loads((entries[0] / "meta.json").read_text())  # arrays and JSON, never pickle
    second = PreferenceDataModule(str(TOKENIZER), **kw)
    start = time.perf_counter()
    second.setup("fit")
    assert time.perf_counter() - start < 1.0
    assert [p.to_json() for p in second.datasets["train"].pairs] == [p.to_json() for p in first.datasets["train"].pairs]
    # a different setting is a different entry
    PreferenceDataModule(str(TOKENIZER), max_length=32, **kw).setup("fit")
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2


def test_cache_key_follows_the_data(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "chosen": " yes", "rejected": " no"}) + "\n")
    kw = dict(train=str(path), cache_dir=str(tmp_path / "cache"))
    dm = PreferenceDataModule(str(TOKENIZER), **kw)
    dm.setup("fit")
    path.write_text(json.dumps({"prompt": "Hi", "chosen": " sure thing", "rejected": " no"}) + "\n")
    dm2 = PreferenceDataModule(str(TOKENIZER), **kw)
    dm2.setup("fit")
    assert dm2.datasets["train"].pairs[0].chosen_ids != dm.datasets["train"].pairs[0].chosen_ids


class Drawn:
    """A dataset that returns what the sampler drew (a `StepRow`)."""

    def __getitem__(self, row):
        return row


def test_dataloader_batches_are_the_sampler_batches_across_epochs():
    """The DataLoader re-forms batches from the flattened order: a short batch must never sit mid-epoch."""
    from torch.utils.data import DataLoader

    from preflight.datamodules.sampler import FlatBatchSampler

    for world, rank, accumulate in ((1, 0, 1), (2, 1, 1), (1, 0, 4)):
        sampler = PreferenceBatchSampler(
            lengths(28),
            2 if accumulate > 1 else 8 // world,
            seed=3,
            num_replicas=world,
            rank=rank,
            accumulate=accumulate,
        )
        loader = DataLoader(
            Drawn(), batch_size=sampler.batch_size, sampler=FlatBatchSampler(sampler), collate_fn=lambda rows: rows
        )
        for epoch in range(4):
            loader.sampler.set_epoch(epoch)
            expected = [sampler.local_slice(b) for b in sampler.global_batches()]
            got = list(loader)
            assert [[row.index for row in batch] for batch in got] == expected, (world, rank, accumulate, epoch)
            assert [len(b) for b in sampler.global_batches()] == sampler.global_batch_sizes()
            # each row carries the pairs of its optimizer step: its `accumulate` micro-batches over all ranks
            steps = sampler.step_batches()
            micro_per_step = [-(-len(step) // sampler.global_batch_size) for step in steps]
            step_of = [s for s, n in enumerate(micro_per_step) for _ in range(n)]
            for batch, step in zip(got, step_of):
                assert {row.step_pairs for row in batch} == {len(steps[step])}, (world, rank, accumulate, epoch)
