"""The demo federation: deterministic sample data and the process orchestration behind ``make demo``."""
