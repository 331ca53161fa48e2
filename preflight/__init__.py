"""preflight: PyTorch Lightning plugins for preference optimization of language models."""

__version__ = "0.1.0"
