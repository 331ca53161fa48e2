"""Lists of scored completions: read from every format into the store, checked row by row, turned into pairs (or
kept whole) by `pairs_from_lists`, batched by prompts with the step's pair count."""

import itertools
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preflight.datamodules import PreferenceDataModule, PreferenceDataError, list_grid, pairs_from_scores
from tests.conftest import TOKENIZER

ROWS = [
    {"prompt": "Q: one\nA:", "completions": [" a", " bb", " ccc", " d"], "scores": [1, 3, 2, 3]},
    {"prompt": "Q: two\nA:", "completions": [" x", " y"], "scores": [0.5, 0.25]},
    {"prompt": "Q: three\nA:", "completions": [" p", " q", " r"], "scores": [2, 2, 7]},
]


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def module(tmp_path, train, **kwargs):
    return PreferenceDataModule(TOKENIZER, train=train, cache_dir=str(tmp_path / "cache"), **kwargs)


def expected_ids(tokenizer, prompt, completion):
    """Prompt and completion ids as a pair's are tokenized: prompt alone, prompt + completion + EOS, split at the
    prompt's tokens."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    assert full[: len(prompt_ids)] == prompt_ids
    return prompt_ids, full[len(prompt_ids) :]


def stored(data):
    dataset = data.dataset("train")
    return [dataset[i] for i in range(len(dataset))]


def test_jsonl_lists_are_stored_as_each_completion_tokenized_after_its_prompt(tmp_path):
    data = module(tmp_path, str(write_jsonl(tmp_path / "l.jsonl", ROWS)))
    items = stored(data)
    assert [item.index for item in items] == [0, 1, 2]
    for row, item in zip(ROWS, items):
        assert item.scores == [float(s) for s in row["scores"]]
        for completion, ids in zip(row["completions"], item.completion_ids):
            prompt_ids, completion_ids = expected_ids(data.tokenizer, row["prompt"], completion)
            assert item.prompt_ids == prompt_ids and ids == completion_ids
    assert data.describe("fit").startswith(f"train {tmp_path / 'l.jsonl'} (3 lists)")
    # read again: from the cache, the same lists
    again = module(tmp_path, str(tmp_path / "l.jsonl"))
    assert stored(again) == items


def test_parquet_and_datasets_give_the_same_store(tmp_path):
    from datasets import Dataset

    reference = stored(module(tmp_path, str(write_jsonl(tmp_path / "l.jsonl", ROWS))))
    table = pa.Table.from_pylist([{**r, "scores": [float(s) for s in r["scores"]]} for r in ROWS])
    pq.write_table(table, tmp_path / "l.parquet")
    assert stored(module(tmp_path, str(tmp_path / "l.parquet"))) == reference
    Dataset.from_list([{**r, "scores": [float(s) for s in r["scores"]]} for r in ROWS]).save_to_disk(tmp_path / "hf")
    assert stored(module(tmp_path, str(tmp_path / "hf"))) == reference


def test_conversational_lists_render_through_the_chat_template(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "Is the lamp in stock?"}],
        "completions": [[{"role": "assistant", "content": "Yes, gladly."}], [{"role": "assistant", "content": "No."}]],
        "scores": [1, 0],
    }
    data = module(tmp_path, str(write_jsonl(tmp_path / "c.jsonl", [row])))
    (item,) = stored(data)
    tokenizer = data.tokenizer
    render = lambda m, gen: list(  # noqa: E731
        tokenizer.apply_chat_template(m, tokenize=True, add_generation_prompt=gen, return_dict=True)["input_ids"]
    )
    assert item.prompt_ids == render(row["prompt"], True)
    for completion, ids in zip(row["completions"], item.completion_ids):
        assert item.prompt_ids + ids == render(row["prompt"] + completion, False)


@pytest.mark.parametrize(
    "line, problem",
    [
        ({"prompt": "p", "completions": [" a"], "scores": [1]}, "needs at least 2 completions, got 1"),
        ({"prompt": "p", "completions": [" a", " b"], "scores": [1]}, "holds 1 scores for 2 completions"),
        ('{"prompt": "p", "completions": [" a", " b"], "scores": [1, NaN]}', "score 2 is not finite (nan)"),
        ({"prompt": "p", "completions": [" a", " b"], "scores": [1, "x"]}, "score 2 is not a number ('x')"),
        (
            {"completions": [" a", " b"], "scores": [1, 0]},
            "missing field 'prompt' (the row's fields: completions, scores; name yours with data.columns, e.g. "
            "{your_column: prompt})",
        ),
        (
            {"prompt": "p", "chosen": " a", "rejected": " b"},
            "a row of pairs in a split of lists (its first row holds lists)",
        ),
    ],
)
def test_a_bad_list_row_is_named_by_file_and_line(tmp_path, line, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], line])
    with pytest.raises(PreferenceDataError) as err:
        module(tmp_path, str(path)).setup("fit")
    assert str(err.value).startswith(f"{path}, line 2: ") and str(err.value).endswith(problem)
    # skipped and reported with on_bad_rows: skip; the all-tied list is dropped and counted
    tied = {"prompt": "t", "completions": [" a", " b"], "scores": [2, 2]}
    write_jsonl(path, [ROWS[0], line, tied, ROWS[1]])
    data = module(tmp_path, str(path), on_bad_rows="skip")
    assert [item.index for item in stored(data)] == [0, 3]
    (report,) = data.problem_reports("fit")
    assert report.startswith(f"{path}: 2 of 4 lists kept, 1 bad rows skipped (first: {path}, line 2: ")
    assert report.endswith(f"{problem}), 1 with all scores tied dropped")


def test_ultrafeedback_completions_map_through_dotted_columns(tmp_path):
    row = {
        "instruction": "Q: one\nA:",
        "completions": [
            {"model": "m1", "response": " a", "overall_score": 7.5, "annotations": {}},
            {"model": "m2", "response": " bb", "overall_score": 4.0, "annotations": {}},
        ],
    }
    columns = {"instruction": "prompt", "completions.response": "completions", "completions.overall_score": "scores"}
    data = module(tmp_path, str(write_jsonl(tmp_path / "uf.jsonl", [row])), columns=columns)
    (item,) = stored(data)
    assert item.scores == [7.5, 4.0]
    for completion, ids in zip((" a", " bb"), item.completion_ids):
        assert ids == expected_ids(data.tokenizer, "Q: one\nA:", completion)[1]
    broken = {**row, "completions": [{"response": " a"}, {"response": " b", "overall_score": 1}]}
    write_jsonl(tmp_path / "uf.jsonl", [broken])
    with pytest.raises(PreferenceDataError, match=r"uf.jsonl, line 1: field 'completions', element 1 has no key "):
        module(tmp_path, str(tmp_path / "uf.jsonl"), columns=columns).setup("fit")


def rule(scores, mode):
    """The modes, written from their definitions: a pair (i, j) means i is chosen over j."""
    K = len(scores)
    if mode == "all":
        return {(i, j) for i, j in itertools.permutations(range(K), 2) if scores[i] > scores[j]}
    if mode == "best_worst":
        top, bottom = max(scores), min(scores)
        if top == bottom:
            return set()
        return {(scores.index(top), scores.index(bottom))}
    # consecutive: dense ranks (ties share one), each of rank r against each of rank r + 1
    rank = {s: r for r, s in enumerate(sorted(set(scores), reverse=True))}
    return {(i, j) for i in range(K) for j in range(K) if rank[scores[j]] == rank[scores[i]] + 1}


@pytest.mark.parametrize("mode", ["all", "best_worst", "consecutive"])
def test_pairs_from_lists_are_those_the_rule_gives(mode):
    rng = random.Random(0)
    for _ in range(300):
        scores = [rng.choice([0, 1, 1.5, 2, 3]) for _ in range(rng.randint(2, 8))]
        got = pairs_from_scores(scores, mode)
        assert len(got) == len(set(got)) and set(got) == rule(scores, mode), scores
        assert all(scores[i] > scores[j] for i, j in got)  # ties never form a pair


@pytest.mark.parametrize("mode", ["all", "best_worst", "consecutive", "list"])
def test_a_batch_holds_the_prompts_pairs_and_the_steps_pair_count(tmp_path, mode):
    path = write_jsonl(tmp_path / "l.jsonl", ROWS)
    data = module(tmp_path, str(path), batch_size=3, pairs_from_lists=mode, group_by_length=False)
    data.setup("fit")
    (batch,) = list(data.train_dataloader())
    order = batch["index"].tolist()
    assert sorted(order) == [0, 1, 2]
    rows = [(b, k) for b in order for k in range(len(ROWS[b]["completions"]))]  # (list, completion) of each row
    assert batch["list_index"].tolist() == [order.index(b) for b, _ in rows]
    assert batch["scores"].tolist() == [ROWS[b]["scores"][k] for b, k in rows]
    for n, (b, k) in enumerate(rows):
        prompt, completion = expected_ids(data.tokenizer, ROWS[b]["prompt"], ROWS[b]["completions"][k])
        length = len(prompt) + len(completion)
        assert batch["input_ids"][n, :length].tolist() == prompt + completion
        assert batch["completion_mask"][n].tolist() == [0] * len(prompt) + [1] * len(completion) + [0] * (
            batch["input_ids"].shape[1] - length
        )
    if mode == "list":
        assert "pairs" not in batch and int(batch["step_pairs"]) == 3
        grid, mask = list_grid(batch)
        assert mask.sum(1).tolist() == [len(ROWS[b]["completions"]) for b in order]
        assert [[rows[int(r)] for r, m in zip(g, ms) if m] for g, ms in zip(grid, mask)] == [
            [(b, k) for k in range(len(ROWS[b]["completions"]))] for b in order
        ]
        return
    want = {(rows.index((b, i)), rows.index((b, j))) for b in order for i, j in rule(ROWS[b]["scores"], mode)}
    assert set(map(tuple, batch["pairs"].tolist())) == want
    assert int(batch["step_pairs"]) == len(want)


def test_the_step_pair_count_spans_micro_batches_and_processes(tmp_path):
    """Prompts per micro-batch and process, 2 processes, 2 micro-batches per step: every micro-batch of a step
    carries the pairs of all 4 × 2 prompts of that step."""
    rng = random.Random(1)
    rows = [
        {
            "prompt": f"Q: {i}\nA:",
            "completions": [f" c{k}" for k in range(K)],
            "scores": [rng.randint(0, 3) for _ in range(K)],
        }
        for i, K in enumerate(rng.randint(2, 5) for _ in range(40))
    ]
    rows = [r for r in rows if len(set(r["scores"])) > 1]
    path = write_jsonl(tmp_path / "l.jsonl", rows)
    counts = {}
    for rank in (0, 1):
        data = module(tmp_path, str(path), batch_size=2, pairs_from_lists="all")
        data._distribution, data._accumulation = (lambda r=rank: (2, r)), (lambda: 2)  # as a 2-process trainer
        data.setup("fit")
        for n, batch in enumerate(data.train_dataloader()):
            counts.setdefault(n // 2, []).append((int(batch["step_pairs"]), batch["pairs"].shape[0]))
    for step, seen in counts.items():
        totals = {total for total, _ in seen}
        assert len(totals) == 1 and totals == {sum(p for _, p in seen)}, (step, seen)
    assert sum(p for seen in counts.values() for _, p in seen) == sum(len(rule(r["scores"], "all")) for r in rows)
