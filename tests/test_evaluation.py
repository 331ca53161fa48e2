"""GenerationEval from plain Lightning code: seeded samples from the policy and the reference, scored by the
shipped politeness reward, with the KL estimate checked against a naive per-sequence computation."""

import lightning as L
import pytest

from preflight import PreferenceDataModule, PreferenceModule
from preflight.evaluation import GenerationEval, GenerationEvalError
from preflight.rewards import politeness
from tests.conftest import TINY_MODEL, TOKENIZER, VAL
from tests.helpers import naive_sequence_logps


def fit(tmp_path, steps, callback, **module_kwargs):
    L.seed_everything(0)
    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), val=str(VAL), batch_size=16, use_cache=False)
    module = PreferenceModule(str(TINY_MODEL), **{"learning_rate": 1e-3, **module_kwargs})
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(module, data)
    return trainer, module


def test_politeness_scores_each_word():
    # thanks, reaching, wonderful, day
    assert politeness(["x"], [" Thanks for reaching out. Have a wonderful day."]) == [4.0]
    assert politeness(["x"], [" Ugh, fine. Go away."]) == [-2.0]
    assert politeness(["x", "y"], ["", "the bike"]) == [0.0, 0.0]


def test_samples_scores_and_kl_of_a_trained_policy(tmp_path):
    callback = GenerationEval(reward="preflight.rewards:politeness", num_prompts=4, max_new_tokens=12)
    trainer, module = fit(tmp_path, 30, callback)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/gen/")}
    assert set(logged) == {"val/gen/reward", "val/gen/win_rate", "val/gen/kl", "val/gen/length"}

    again = callback.evaluate(trainer, module)  # the same weights and seeds: the same samples
    assert again == pytest.approx(logged, abs=1e-6)
    rows = callback.last_rows
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    data = trainer.datamodule.dataset("val")
    tok = trainer.datamodule.tokenizer
    ratios, wins = [], []
    for row in rows:
        prompt, sample = list(data[row["index"]].prompt_ids), callback.last_samples[row["index"]]
        assert 1 <= len(sample) <= 12 and row["policy_tokens"] == len(sample)
        assert row["policy_reward"] == politeness([], [tok.decode(sample, skip_special_tokens=True)])[0]
        naive = naive_sequence_logps(module.policy, prompt, sample) - naive_sequence_logps(
            module.reference_model, prompt, sample
        )
        assert row["log_ratio"] == pytest.approx(naive, abs=1e-4)
        ratios.append(naive)
        wins.append(
            1.0
            if row["policy_reward"] > row["reference_reward"]
            else 0.5
            if row["policy_reward"] == row["reference_reward"]
            else 0.0
        )
    assert logged["val/gen/kl"] == pytest.approx(sum(ratios) / 4, abs=1e-4)
    assert logged["val/gen/win_rate"] == pytest.approx(sum(wins) / 4)
    assert logged["val/gen/reward"] == pytest.approx(sum(r["policy_reward"] for r in rows) / 4)
    assert logged["val/gen/kl"] > 0.01  # it trained away from the reference

    import csv

    table = list(csv.DictReader(open(tmp_path / "lightning_logs/version_0/generations.csv", newline="")))
    assert list(table[0]) == [
        "step",
        "index",
        "prompt",
        "policy_completion",
        "policy_reward",
        "policy_tokens",
        "reference_completion",
        "reference_reward",
        "log_ratio",
    ]
    assert len(table) == 2 * 4  # the validation at step 30, then the call above
    assert [(int(r["step"]), int(r["index"])) for r in table] == [(30, i) for i in range(4)] * 2
    assert [float(r["log_ratio"]) for r in table[4:]] == pytest.approx(ratios, abs=1e-4)


@pytest.mark.parametrize("peft", [None, {"r": 4, "lora_alpha": 8}], ids=["copy", "lora adapter"])
def test_an_untrained_policy_is_its_reference(tmp_path, peft):
    callback = GenerationEval(reward=politeness, num_prompts=3, max_new_tokens=8)
    trainer, module = fit(tmp_path, 1, callback, learning_rate=0.0, peft=peft)
    assert (module.reference_model is None) == (peft is not None)  # the adapter-disabled policy is the reference
    assert float(trainer.callback_metrics["val/gen/kl"]) == pytest.approx(0.0, abs=1e-5)  # same weights, same samples
    assert float(trainer.callback_metrics["val/gen/win_rate"]) == 0.5


def test_bad_settings_are_one_line_errors():
    with pytest.raises(GenerationEvalError, match="exactly one of reward"):
        GenerationEval()
    with pytest.raises(GenerationEvalError, match=r"reward 'preflight.rewards:nothing' cannot be imported"):
        from preflight.evaluation import load_reward_function

        load_reward_function("preflight.rewards:nothing")
