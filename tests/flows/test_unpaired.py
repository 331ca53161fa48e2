"""Unpaired feedback and a moving reference from the command: KTO on the shipped unpaired file and on the shipped
pairs made unpaired, BCO's running shift in the checkpoint, TR-DPO's config resumed, refusals in one line, and KTO
equal to TRL's KTOTrainer."""

import csv
import json

import pytest
import torch
import yaml

from tests.conftest import ROOT, TINY_MODEL, TOKENIZER
from tests.flows.test_lists import QUICK_LISTS

QUICK = QUICK_LISTS[2:]  # two steps, validated at the second, without --data.train


def logged(workdir, run):
    rows = list(csv.DictReader(open(workdir / "runs" / run / "version_0" / "metrics.csv")))
    return {k: float(v) for r in rows for k, v in r.items() if v and "/" in k}


def labels(path):
    rows = [json.loads(line) for line in open(path)]
    return sum(r["label"] for r in rows), sum(not r["label"] for r in rows)


def test_kto_on_the_shipped_unpaired_file_reports_its_class_balance(preflight, workdir):
    result = preflight("fit", "--config", "configs/kto.yaml", "--data.train", "assets/data/unpaired_val.jsonl", *QUICK)
    assert result.code == 0, result.err[-3000:]
    good, bad = labels(ROOT / "assets/data/unpaired_val.jsonl")
    split = f"assets/data/unpaired_val.jsonl (100 unpaired: {good} desirable, {bad} undesirable)"
    assert f"preflight: data: train {split}, val {split}" in result.preflight_lines()
    values = logged(workdir, "kto")
    for key in ("train/loss", "train/kl", "train/rewards/chosen", "train/logps/rejected", "val/loss", "val/kl"):
        assert key in values, sorted(values)
    assert values["train/kl"] >= 0 and "train/rewards/accuracies" not in values  # no pairs: no pairwise accuracy


def test_unpair_turns_the_shipped_pairs_into_unpaired_rows(preflight, workdir):
    result = preflight(
        "fit",
        "--config",
        "configs/kto.yaml",
        "--data.train",
        "assets/data/val.jsonl",
        "--data.val",
        "assets/data/val.jsonl",
        "--data.unpair",
        "true",
        *QUICK,
    )
    assert result.code == 0, result.err[-3000:]
    split = "assets/data/val.jsonl (400 unpaired: 200 desirable, 200 undesirable)"
    assert f"preflight: data: train {split}, val {split}" in result.preflight_lines()


def test_bco_keeps_its_running_shift_in_the_checkpoint(preflight, workdir):
    result = preflight(
        "fit",
        "--config",
        "configs/kto.yaml",
        "--data.train",
        "assets/data/unpaired_val.jsonl",
        "--model.loss",
        "bco",
        "--data.batch_size",
        "8",
        *QUICK,
    )
    assert result.code == 0, result.err[-3000:]
    ckpt = workdir / "runs/kto/version_0/checkpoints/last.ckpt"  # the run is named for its config
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert float(state["loss_fn.reward_count"]) == 2 * 8  # every training row's reward, 2 steps of 8
    assert logged(workdir, "kto")["train/delta"] == pytest.approx(
        float(state["loss_fn.reward_sum"] / state["loss_fn.reward_count"]), abs=1e-5
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model.loss", "dpo"],
            "preflight: error: loss 'dpo' takes pairs, but the data gives unpaired completions (prompt, completion, "
            "label): choose an unpaired loss (apo_zero_unpaired, bco, kto), or give pairs",
        ),
        (
            ["--data.train", "assets/data/val.jsonl", "--data.val", "null"],
            "preflight: error: loss 'kto' takes unpaired completions, but the data gives pairs: train it on unpaired "
            "rows (prompt, completion, label), or turn pairs into them with data.unpair: true",
        ),
        (
            ["--model.reference", "precomputed"],
            "preflight: error: reference: precomputed keeps one value per pair; list and unpaired data need "
            "reference: copy or adapter",
        ),
    ],
)
def test_data_a_loss_does_not_take_is_refused_in_one_line(preflight, workdir, args, message):
    result = preflight("fit", "--config", "configs/kto.yaml", *QUICK, *args)
    assert result.code == 2 and result.preflight_lines()[-1] == message, result.err[-2000:]


def test_the_tr_dpo_config_moves_the_reference_and_resumes_with_it(preflight, workdir):
    config = yaml.safe_load((ROOT / "configs/tr_dpo.yaml").read_text())
    config["trainer"]["callbacks"][0]["init_args"]["every_n_steps"] = 2
    config["trainer"]["callbacks"][1]["init_args"]["every_n_train_steps"] = 3
    (workdir / "tr.yaml").write_text(yaml.safe_dump(config))
    common = [
        "fit",
        "--config",
        "tr.yaml",
        "--data.train",
        "assets/data/val.jsonl",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    first = preflight(*common, "--trainer.max_steps", "3")
    assert first.code == 0, first.err[-3000:]
    assert "preflight: reference: moves towards the policy every 2 steps (soft, α=0.6; TR-DPO)" in first.out
    last = workdir / "runs/tr/version_0/checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["callbacks"]["MovingReference"] == {"last_update": 2, "updates": 1}
    reference = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("reference_model.")}
    policy = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("policy.")}
    assert reference and any(
        not torch.equal(v, policy["policy." + k.removeprefix("reference_model.")]) for k, v in reference.items()
    )
    resumed = preflight(*common, "--trainer.max_steps", "5", "--ckpt_path", "last")
    assert resumed.code == 0, resumed.err[-3000:]
    assert "preflight: reference: moves towards the policy every 2 steps (soft, α=0.6; TR-DPO), last at step 2" in (
        resumed.out
    )
    assert torch.load(last, weights_only=True)["callbacks"]["MovingReference"] == {"last_update": 4, "updates": 2}


def test_kto_equals_trls_kto_trainer_after_one_step(tmp_path):
    """The same 16 unpaired rows, in one batch in file order (TRL samples sequentially; its KL rows rotate the
    batch's completions by one, as preflight's collator does), the same policy and a different reference: the loss,
    KL estimate, log-probs and rewards TRL logs for step 1 equal preflight's for that batch, and preflight's equal a
    naive float64 computation to 1e-4 relative. TRL's own log-probs are about 1e-5 relative off that computation;
    the rewards and the KL estimate, differences of log-probs near −250 here, inherit that as an absolute error, so
    they are compared with TRL to 1e-4 of the log-probs' scale."""
    pytest.importorskip("trl", reason="compares with TRL, which is not installed")
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import KTOConfig, KTOTrainer

    from preflight.datamodules import PreferenceDataModule
    from preflight.modules import PreferenceModule

    rows = [json.loads(line) for line in open(ROOT / "assets/data/unpaired_val.jsonl")][:16]
    for name, seed in (("policy", 1), ("ref", 2)):
        torch.manual_seed(seed)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL)).save_pretrained(tmp_path / name)

    data = PreferenceDataModule(str(TOKENIZER), train=rows, use_cache=False, max_length=None)
    data.setup("fit")
    items = [data.dataset("train")[i] for i in range(16)]
    batch = data.collate_for("unpaired")(items)
    module = PreferenceModule(
        str(tmp_path / "policy"), loss={"name": "kto", "beta": 0.1}, reference_model=str(tmp_path / "ref")
    )
    module.configure_model()
    output, chosen, rejected = module.compute_loss(batch)
    module.train_metrics.update(output, chosen, rejected)
    mine = {k.removeprefix("train/"): float(v) for k, v in module.train_metrics.compute_and_reset().items()}

    truth = naive_kto(tmp_path, items, beta=0.1)
    for key, value in truth.items():
        assert mine[key] == pytest.approx(value, rel=1e-4), (key, mine[key], value)

    args = KTOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=16,
        max_steps=1,
        beta=0.1,
        learning_rate=1e-6,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        max_length=None,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tmp_path / "policy"),
        ref_model=AutoModelForCausalLM.from_pretrained(tmp_path / "ref"),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=data.tokenizer,
    )
    trainer.train()
    theirs = trainer.state.log_history[0]
    scale = 1e-4 * max(abs(mine["logps/chosen"]), abs(mine["logps/rejected"]))
    for key in ("loss", "logps/chosen", "logps/rejected"):
        assert mine[key] == pytest.approx(theirs[key], rel=1e-4), (key, mine[key], theirs[key])
    for key, tolerance in (("kl", scale), ("rewards/chosen", 0.1 * scale), ("rewards/rejected", 0.1 * scale)):
        assert abs(mine[key] - theirs[key]) <= tolerance, (key, mine[key], theirs[key])


def naive_kto(folder, items, beta):
    """KTO's logged values for one batch, from float64 batch-of-1 forwards of each row and of each mismatched row."""
    import math

    from transformers import AutoModelForCausalLM

    policy, reference = (
        AutoModelForCausalLM.from_pretrained(folder / name, dtype=torch.float64).eval() for name in ("policy", "ref")
    )

    def logp(model, prompt, completion):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0]
        return sum(torch.log_softmax(logits[len(prompt) + k - 1], -1)[t].item() for k, t in enumerate(completion))

    n = len(items)
    rho, logps = [], []
    for item in items:
        logps.append(logp(policy, item.prompt_ids, item.completion_ids[0]))
        rho.append(logps[-1] - logp(reference, item.prompt_ids, item.completion_ids[0]))
    shifted = [(items[i].prompt_ids, items[i - 1].completion_ids[0]) for i in range(n)]
    kl = max(0.0, sum(logp(policy, p, c) - logp(reference, p, c) for p, c in shifted) / n)
    good = [item.scores[0] == 1.0 for item in items]
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    losses = [1 - sigmoid(beta * (r - kl)) if g else 1 - sigmoid(beta * (kl - r)) for r, g in zip(rho, good)]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {
        "loss": mean(losses),
        "kl": kl,
        "logps/chosen": mean([v for v, g in zip(logps, good) if g]),
        "logps/rejected": mean([v for v, g in zip(logps, good) if not g]),
        "rewards/chosen": mean([beta * r for r, g in zip(rho, good) if g]),
        "rewards/rejected": mean([beta * r for r, g in zip(rho, good) if not g]),
    }
