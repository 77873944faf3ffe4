"""longtail: image classifiers that stay accurate on the rare classes of long-tailed data."""

__version__ = "0.1.0"
