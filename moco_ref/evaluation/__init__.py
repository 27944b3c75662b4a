"""Evaluation of a learned encoder: the kNN monitor and the linear probe."""
