"""uda-adapt: unsupervised domain adaptation of semantic segmenters, from training to the edge."""
