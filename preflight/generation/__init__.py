"""Generation during evaluation, in three parts that `preflight.evaluation.GenerationEval` puts together:

- `sampling`: completions sampled from a model for prompts, seeded per prompt (one small interface, so another
  engine can stand in for transformers' ``generate``);
- `scoring`: a reward for each completion, from a function named by import path or a reward model;
- `tables`: the logged values (reward, win rate, KL estimate, length) and the ``generations.csv`` table.
"""
