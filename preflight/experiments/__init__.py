"""Experiments against a known reward: `preflight experiment bandit`."""
