"""The known-reward language task that `preflight experiment frontier` trains on, built offline.

1. A **base policy**: the shipped tiny Llama config (random init, seeded), fine-tuned by next-token
   cross-entropy on both replies of every shipped training pair, so it answers politely about as
   often as rudely.
2. A **true reward**: `preflight.rewards.politeness`, a sum over the completion's words.
3. **Preference pairs sampled from the base policy**: two completions per prompt at temperature 1,
   the first chosen with probability σ(r₁ − r₂), the Bradley-Terry model of the true reward (seed
   Eq. 1). The base policy is the reference, so the optimum of the seed's objective (Eq. 3) is known
   in form: π*(y|x) = π_base(y|x) exp(r(y)/β) / Z(x) (Eq. 4).

With ``completions`` K > 2, each training prompt gets K completions instead, scored by the true reward plus
Gumbel noise (a draw of the Plackett–Luce model of the reward, whose K = 2 case is Bradley-Terry), written as
a list file (``lists/train.jsonl``: prompt, completions, scores, and the true rewards).

Since the reward reads only the completion, and the base policy answers every prompt alike, that
optimum's true reward and KL can be estimated by self-normalised importance sampling over the sampled
completions: with w = exp(r/β), E_π*[r] = E_base[w r] / E_base[w] and KL(π* ‖ π_base) =
E_π*[r]/β − log E_base[w] (`optimal_frontier`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..rewards import politeness
from ..shipped import shipped_path


@dataclass
class KnownRewardTask:
    """What the task is built from and how (the base policy's fine-tuning, the sampled pairs).

    Args:
        model: the base policy's model config folder (random init, seeded by ``seed``).
        tokenizer: the tokenizer folder.
        data: the folder of the shipped ``train.jsonl`` and ``val.jsonl`` (prompt, chosen, rejected).
        base_epochs: epochs of next-token fine-tuning of the base policy on both replies of each pair.
        base_learning_rate: AdamW's learning rate of that fine-tuning.
        base_batch_size: sequences per fine-tuning step.
        train_pairs: preference pairs sampled from the base policy (one per training prompt, at most
            the prompts there are).
        val_pairs: pairs sampled on validation prompts (their prompts are also the evaluation prompts).
        max_new_tokens: the most tokens sampled per completion.
        completions: completions sampled per training prompt; above 2 they are written as lists.
        seed: the seed of the base policy's init and fine-tuning, and of the sampled pairs and labels.
    """

    model: str = "assets/tiny-llama"
    tokenizer: str = "assets/tokenizer"
    data: str = "assets/data"
    base_epochs: int = 2
    base_learning_rate: float = 3e-3
    base_batch_size: int = 32
    train_pairs: int = 2000
    val_pairs: int = 200
    max_new_tokens: int = 64
    completions: int = 2
    seed: int = 0

    def build(self, out: Path) -> dict:
        """Write the base policy (``out/base``) and the sampled pairs (``out/pairs/{train,val}.jsonl``);
        returns what was measured on the way (the base's fine-tuning loss, the rewards of its samples)."""
        from transformers import AutoModelForCausalLM

        from ..pretrained import load_model, load_tokenizer

        tokenizer = load_tokenizer(self.tokenizer)  # with a padding token, as the data module has it
        model = load_model(self.model, AutoModelForCausalLM, init_seed=self.seed)
        train = read_rows(Path(shipped_path(self.data)) / "train.jsonl")
        losses = finetune(
            model, tokenizer, train, self.base_epochs, self.base_learning_rate, self.base_batch_size, self.seed
        )
        model.save_pretrained(out / "base")
        tokenizer.save_pretrained(out / "base")
        info = {"base_losses": losses}
        for split, rows, n in (
            ("train", train, self.train_pairs),
            ("val", read_rows(Path(shipped_path(self.data)) / "val.jsonl"), self.val_pairs),
        ):
            prompts = [row["prompt"] for row in rows[:n]]
            seed = self.seed + (split == "val")
            if split == "train" and self.completions > 2:
                lists = sample_lists(model, tokenizer, prompts, self.max_new_tokens, seed, self.completions)
                write_rows(out / "lists" / "train.jsonl", lists)
                rewards = [r for row in lists for r in row["rewards"]]
                info["train_pairs"] = len(lists)  # prompts, each with its list
            else:
                pairs = sample_pairs(model, tokenizer, prompts, self.max_new_tokens, seed=seed)
                write_rows(out / "pairs" / f"{split}.jsonl", pairs)
                rewards = [p[k] for p in pairs for k in ("chosen_reward", "rejected_reward")]
                info[f"{split}_pairs"] = len(pairs)
            info[f"{split}_base_reward"] = sum(rewards) / len(rewards)
        return info


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def finetune(
    model, tokenizer, rows: list[dict], epochs: int, learning_rate: float, batch_size: int, seed: int
) -> list[float]:
    """Next-token cross-entropy on the completion tokens of prompt + reply, for both replies of each row,
    tokenized as the data module tokenizes pairs (`tokenizer` has a padding token, as `load_tokenizer` gives
    it). Returns the mean loss of each epoch."""
    from ..datamodules.formats import PreferenceExample
    from ..datamodules.tokenization import tokenize_example

    sequences = []
    for i, row in enumerate(rows):
        pair = tokenize_example(tokenizer, PreferenceExample(i, "", row["prompt"], row["chosen"], row["rejected"]))
        sequences += [(pair.prompt_ids, pair.chosen_ids), (pair.prompt_ids, pair.rejected_ids)]
    pad = tokenizer.pad_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    order = random.Random(seed)
    model.train()
    epoch_losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            order.shuffle(sequences)
            total = count = 0.0
            for start in range(0, len(sequences), batch_size):
                chunk = sequences[start : start + batch_size]
                length = max(len(p) + len(c) for p, c in chunk)
                ids = torch.full((len(chunk), length), pad)
                labels = torch.full((len(chunk), length), -100)
                mask = torch.zeros((len(chunk), length), dtype=torch.long)
                for k, (p, c) in enumerate(chunk):
                    ids[k, : len(p) + len(c)] = torch.tensor(p + c)
                    labels[k, len(p) : len(p) + len(c)] = torch.tensor(c)
                    mask[k, : len(p) + len(c)] = 1
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                loss = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            epoch_losses.append(total / max(count, 1))
    model.eval()
    return epoch_losses


@torch.no_grad()
def sample_pairs(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> list[dict]:
    """One pair per prompt: two completions sampled from `model` at temperature 1 (no top-k, no top-p),
    labelled by the Bradley-Terry model of the politeness reward. Prompts of equal token length are
    sampled together, so no padding enters a prompt (`tokenizer` has a padding token, for the sequences that
    end early). Pairs whose two replies are the same text, or one is empty, are left out (they carry no
    preference)."""
    completions = sample_completions(model, tokenizer, prompts, max_new_tokens, seed, 2)
    labels = random.Random(seed)
    pairs = []
    for i, prompt in enumerate(prompts):
        first, second = completions[i]
        if first == second or not first.strip() or not second.strip():
            continue
        r1, r2 = politeness([prompt] * 2, [first, second])
        first_wins = first_is_preferred(r1, r2, labels)
        chosen, rejected = (first, second) if first_wins else (second, first)
        pairs.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "chosen_reward": r1 if first_wins else r2,
                "rejected_reward": r2 if first_wins else r1,
            }
        )
    return pairs


@torch.no_grad()
def sample_lists(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, k: int) -> list[dict]:
    """One list per prompt: k completions sampled as `sample_pairs` samples two, the empty ones and repeats left
    out, scored by the true reward plus Gumbel noise (their order is a draw of the Plackett–Luce model of the
    reward); prompts left with fewer than 2 completions are left out."""
    completions = sample_completions(model, tokenizer, prompts, max_new_tokens, seed, k)
    noise = random.Random(seed)
    lists = []
    for i, prompt in enumerate(prompts):
        texts = list(dict.fromkeys(t for t in completions[i] if t.strip()))
        if len(texts) < 2:
            continue
        rewards = politeness([prompt] * len(texts), texts)
        scores = [r - math.log(-math.log(min(max(noise.random(), 1e-12), 1 - 1e-12))) for r in rewards]
        lists.append({"prompt": prompt, "completions": texts, "scores": scores, "rewards": rewards})
    return lists


def sample_completions(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, k: int):
    """k completions per prompt (index → texts) from `model` at temperature 1 (no top-k, no top-p); prompts of
    equal token length are sampled together, so no padding enters a prompt."""
    model.eval()
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    completions: dict[int, list[str]] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for length in sorted(by_length):
            group = by_length[length]
            ids = torch.tensor([encoded[i] for i in group])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, length:], skip_special_tokens=True)
            for n, i in enumerate(group):
                completions[i] = texts[k * n : k * n + k]
    return completions


def plackett_luce_politeness(prompts: list[str], completions: list[str]) -> list[float]:
    """The true reward plus Gumbel noise that is a fixed function of (prompt, completion): ranking sampled lists by
    it draws the Plackett–Luce model of the reward (for two completions, Bradley-Terry: the first is preferred with
    probability σ(r₁ − r₂)), the annotator `preflight experiment frontier --iterative` scores its rounds with."""
    scores = []
    for prompt, completion, reward in zip(prompts, completions, politeness(prompts, completions)):
        digest = hashlib.sha256(f"{prompt}\0{completion}".encode()).digest()
        u = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
        scores.append(reward - math.log(-math.log(u)))
    return scores


def first_is_preferred(r1: float, r2: float, rng: random.Random) -> bool:
    """A draw of the Bradley-Terry model (seed Eq. 1): True with probability σ(r₁ − r₂)."""
    return rng.random() < 1 / (1 + math.exp(max(min(r2 - r1, 700.0), -700.0)))


def optimal_frontier(rewards: list[float], betas: list[float]) -> list[dict]:
    """The optimum of Eq. 3 at each β, from true rewards of base-policy samples (self-normalised importance
    sampling, weights exp(r/β) taken in log space): its expected true reward, KL(π* ‖ π_base), and the
    effective sample size (Σw)²/Σw² that the estimate rests on (small when few samples carry the weight)."""
    r = torch.tensor(rewards, dtype=torch.float64)
    points = []
    for beta in betas:
        log_w = r / beta
        log_mean_w = torch.logsumexp(log_w, 0) - math.log(len(rewards))
        weights = torch.softmax(log_w, 0)
        expected = float((weights * r).sum())
        points.append(
            {
                "beta": beta,
                "reward": expected,
                "kl": expected / beta - float(log_mean_w),
                "effective_samples": float(1 / weights.pow(2).sum()),
            }
        )
    return points


__all__ = [
    "KnownRewardTask",
    "finetune",
    "first_is_preferred",
    "optimal_frontier",
    "plackett_luce_politeness",
    "sample_lists",
    "sample_pairs",
]
