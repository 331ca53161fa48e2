"""Generate the shipped toy preference datasets (assets/data/{train,val}.jsonl, lists_{train,val}.jsonl and
unpaired_{train,val}.jsonl).

Rule: every prompt asks a shop assistant about a topic; both replies carry the same
facts, but the chosen reply is polite and the rejected one is rude (its opener and its
closer come from disjoint word lists). A model that learns the rule ranks the chosen
reply above the rejected one on unseen pairs, so validation reward accuracy measures
learning. The list files hold 3 or 4 completions per prompt, each opener and closer polite or
rude, scored by how many of the two are polite (2, 1 or 0: the two mixed replies tie). The unpaired files hold one
reply per prompt labelled desirable when polite (60% of them: thumbs up/down feedback is rarely balanced).
Deterministic: `python assets/data/generate.py` rewrites the same files.
"""

import json
import random
from pathlib import Path

SEED = 1234
N_TRAIN, N_VAL = 2000, 200
LIST_SEED, N_LIST_TRAIN, N_LIST_VAL = 4321, 500, 50
UNPAIRED_SEED, N_UNPAIRED_TRAIN, N_UNPAIRED_VAL = 2468, 1000, 100

ITEMS = [
    "bike",
    "lamp",
    "kettle",
    "jacket",
    "tent",
    "phone",
    "desk",
    "camera",
    "blender",
    "guitar",
    "backpack",
    "printer",
    "sofa",
    "watch",
    "heater",
    "drill",
    "mirror",
    "scooter",
    "oven",
    "radio",
]
QUESTIONS = [
    "When will my {item} arrive?",
    "Can I return the {item}?",
    "Is the {item} in stock?",
    "How do I clean the {item}?",
    "Does the {item} come with a warranty?",
    "What colour is the {item}?",
    "How heavy is the {item}?",
    "Can you gift wrap the {item}?",
]
FACTS = [
    "it ships within {n} days",
    "the return window is {n} weeks",
    "we have {n} left in the store",
    "a soft cloth works best",
    "the warranty covers {n} years",
    "it comes in {n} colours",
    "it weighs about {n} kilograms",
    "wrapping costs {n} euros",
]
POLITE_OPEN = [
    "Thank you for asking!",
    "Happy to help.",
    "Great question.",
    "Of course, gladly.",
    "Thanks for reaching out.",
]
POLITE_CLOSE = ["Have a wonderful day.", "Let me know if I can help further.", "Enjoy your purchase!", "Kind regards."]
RUDE_OPEN = ["Ugh, fine.", "Whatever.", "Read the manual.", "Not my problem, but", "Stop asking."]
RUDE_CLOSE = ["Go away.", "Do not bother me again.", "Figure out the rest yourself.", "That is all."]


def make_pair(rng: random.Random) -> dict:
    k = rng.randrange(len(QUESTIONS))
    item = rng.choice(ITEMS)
    fact = FACTS[k].format(n=rng.randint(2, 9))
    prompt = f"Customer: {QUESTIONS[k].format(item=item)}\nAssistant:"
    polite = f" {rng.choice(POLITE_OPEN)} About the {item}: {fact}. {rng.choice(POLITE_CLOSE)}"
    rude = f" {rng.choice(RUDE_OPEN)} About the {item}: {fact}. {rng.choice(RUDE_CLOSE)}"
    return {"prompt": prompt, "chosen": polite, "rejected": rude}


def make_list(rng: random.Random) -> dict:
    k = rng.randrange(len(QUESTIONS))
    item = rng.choice(ITEMS)
    fact = FACTS[k].format(n=rng.randint(2, 9))
    prompt = f"Customer: {QUESTIONS[k].format(item=item)}\nAssistant:"
    kinds = [(True, True), (True, False), (False, True), (False, False)]
    if rng.random() < 0.5:
        kinds.pop(rng.choice([1, 2]))  # three completions: one mixed reply left out
    rng.shuffle(kinds)
    completions = [
        f" {rng.choice(POLITE_OPEN if a else RUDE_OPEN)} About the {item}: {fact}. "
        f"{rng.choice(POLITE_CLOSE if b else RUDE_CLOSE)}"
        for a, b in kinds
    ]
    return {"prompt": prompt, "completions": completions, "scores": [int(a) + int(b) for a, b in kinds]}


def make_unpaired(rng: random.Random) -> dict:
    """One reply to a question, polite (desirable) 60% of the time: thumbs-up/thumbs-down feedback, imbalanced."""
    pair = make_pair(rng)
    desirable = rng.random() < 0.6
    return {"prompt": pair["prompt"], "completion": pair["chosen" if desirable else "rejected"], "label": desirable}


def main() -> None:
    rng = random.Random(SEED)
    here = Path(__file__).parent
    for name, n in (("train", N_TRAIN), ("val", N_VAL)):
        with open(here / f"{name}.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps(make_pair(rng)) + "\n")
    rng = random.Random(LIST_SEED)
    for name, n in (("lists_train", N_LIST_TRAIN), ("lists_val", N_LIST_VAL)):
        with open(here / f"{name}.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps(make_list(rng)) + "\n")
    rng = random.Random(UNPAIRED_SEED)
    for name, n in (("unpaired_train", N_UNPAIRED_TRAIN), ("unpaired_val", N_UNPAIRED_VAL)):
        with open(here / f"{name}.jsonl", "w") as f:
            for _ in range(n):
                f.write(json.dumps(make_unpaired(rng)) + "\n")


if __name__ == "__main__":
    main()
