"""preflight: PyTorch Lightning plugins for preference optimization of language models."""

from .datamodules import PreferenceDataError, PreferenceDataModule

__version__ = "0.1.0"

__all__ = ["PreferenceDataError", "PreferenceDataModule", "__version__"]
