"""Build the shipped tokenizer (assets/tokenizer/) from the shipped training data.

A byte-level BPE with 384 tokens: any text encodes (unknown characters fall back to
bytes), BOS `<s>` is added in front of every encoded text (as Llama tokenizers do),
EOS is `</s>`, padding `<pad>`, and a small chat template renders
`{role, content}` messages for the conversational format.
Deterministic: `python assets/tokenizer/build.py` rewrites the same files.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def main() -> None:
    here = Path(__file__).parent
    rows = [json.loads(line) for line in open(here.parent / "data" / "train.jsonl")]
    texts = [r[k] for r in rows for k in ("prompt", "chosen", "rejected")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=SPECIAL[3:],
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(here)


if __name__ == "__main__":
    main()
