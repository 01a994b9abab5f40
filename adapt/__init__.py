"""uda-adapt: unsupervised domain adaptation of semantic segmenters, from training to the edge."""

__version__ = "0.1.0"
