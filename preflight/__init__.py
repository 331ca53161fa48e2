"""preflight: PyTorch Lightning plugins for preference optimization of language models."""

from .datamodules import PreferenceDataError, PreferenceDataModule
from .modules import PreferenceModule, RewardModule

__version__ = "0.1.0"
DISTRIBUTION = "preflight-lightning"  # the name to pip install; "preflight" on PyPI is another project

__all__ = ["PreferenceDataError", "PreferenceDataModule", "PreferenceModule", "RewardModule", "__version__"]
