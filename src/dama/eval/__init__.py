"""Hallucination and helpfulness benchmarks: generation, rule-based scoring (CHAIR, AMBER, POPE), judges, comparison.

See docs/eval.md for how to run each benchmark and what each metric means.
"""
