"""Evaluation: the Inception extractor, the metric suite, content metrics and the EvaluationCallback."""
