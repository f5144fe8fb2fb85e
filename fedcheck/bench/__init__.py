"""Benchmarks behind `fedcheck bench ...`; never imported by runtime code."""
