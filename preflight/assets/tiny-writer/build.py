"""Build the shipped base policy that writes (assets/tiny-writer): the tiny Llama of assets/tiny-llama (random init,
seed 0) fine-tuned by next-token cross-entropy on both replies of every shipped training pair, 2 epochs, exactly as
the known-reward task builds its base policy (`preflight.research.known_reward.finetune`). It answers a shop
question about as often politely as rudely, so DPO on the shipped pairs visibly moves what it writes
(configs/dpo_generate.yaml). About 0.6 MB of float32 weights.

    python preflight/assets/tiny-writer/build.py
"""

import json
from pathlib import Path

from transformers import AutoModelForCausalLM

from preflight.pretrained import load_model, load_tokenizer
from preflight.research.known_reward import finetune

HERE = Path(__file__).parent
ASSETS = HERE.parent


def main() -> None:
    tokenizer = load_tokenizer(str(ASSETS / "tokenizer"))
    model = load_model(str(ASSETS / "tiny-llama"), AutoModelForCausalLM, init_seed=0)
    rows = [json.loads(line) for line in (ASSETS / "data" / "train.jsonl").read_text().splitlines()]
    losses = finetune(model, tokenizer, rows, epochs=2, learning_rate=3e-3, batch_size=32, seed=0)
    print("fine-tuning loss per epoch:", ", ".join(f"{v:.3f}" for v in losses))
    model.save_pretrained(HERE, safe_serialization=True)


if __name__ == "__main__":
    main()
