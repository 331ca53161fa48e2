"""Research tools, not needed to train: experiments against a known reward, which measure what the losses learn.

`preflight experiment bandit` (the exact, tabular case, `bandit`) and `preflight experiment frontier` (true reward
against KL on a language task, `known_reward` and `frontier`). Their full runs take hours on a CPU; their
``--quick`` modes about a minute.
"""
