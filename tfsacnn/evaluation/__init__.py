"""Evaluation: the paper's metrics, model comparison, looking inside models, plots."""
