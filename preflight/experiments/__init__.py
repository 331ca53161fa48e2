"""Experiments against a known reward: `preflight experiment bandit` (the exact, tabular case) and
`preflight experiment frontier` (true reward against KL on a language task, `known_reward`)."""
