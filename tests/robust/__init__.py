"""Robustness tests: hostile networks, hostile peers, hostile input (issue 10)."""
