"""Evaluation: shot-split accuracy, calibration, test-agnostic accuracy, post-hoc priors."""

from longtail.evaluation.agnostic import agnostic_accuracy, resampled_accuracy, shifted_distributions
from longtail.evaluation.calibration import calibration, expected_calibration_error, reliability
from longtail.evaluation.metrics import per_class_accuracy, shot_accuracy
from longtail.evaluation.outputs import EvaluationOutputs, Outputs
from longtail.evaluation.posthoc import adjust_logits, prior
from longtail.evaluation.summary import summarize

__all__ = [
    "EvaluationOutputs",
    "Outputs",
    "adjust_logits",
    "agnostic_accuracy",
    "calibration",
    "expected_calibration_error",
    "per_class_accuracy",
    "prior",
    "reliability",
    "resampled_accuracy",
    "shot_accuracy",
    "summarize",
    "shifted_distributions",
]
