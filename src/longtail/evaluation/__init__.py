"""Evaluation: overall, many-, medium- and few-shot accuracy, per class."""

from longtail.evaluation.metrics import per_class_accuracy, shot_accuracy

__all__ = ["per_class_accuracy", "shot_accuracy"]
