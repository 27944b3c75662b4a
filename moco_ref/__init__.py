"""moco-ref: a from-scratch, autograd-free reference implementation of MoCo."""

__version__ = "0.1.0"
