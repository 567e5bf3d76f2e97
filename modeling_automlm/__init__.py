"""Auto-MLM sentence encoders for self-supervised multilingual retrieval (Xu et al., 2022).

Importing this package registers the classes with `AutoConfig`, `AutoModel` and `AutoModelForPreTraining`, so saved
models load without `trust_remote_code` once it is installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .configuration_automlm import AutoMLMConfig
from .masking import mask_tokens
from .modeling_automlm import (
    AutoMLMForPreTraining,
    AutoMLMForPreTrainingOutput,
    AutoMLMModel,
    AutoMLMModelOutput,
    AutoMLMPreTrainedModel,
    contrastive_loss,
    pool,
)

__version__ = "0.1.0"

AutoConfig.register(AutoMLMConfig.model_type, AutoMLMConfig, exist_ok=True)
AutoModel.register(AutoMLMConfig, AutoMLMModel, exist_ok=True)
AutoModelForPreTraining.register(AutoMLMConfig, AutoMLMForPreTraining, exist_ok=True)
# save_pretrained copies the code files next to the weights for the auto classes registered here.
AutoMLMConfig.register_for_auto_class()
AutoMLMModel.register_for_auto_class("AutoModel")
AutoMLMForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "AutoMLMConfig",
    "AutoMLMForPreTraining",
    "AutoMLMForPreTrainingOutput",
    "AutoMLMModel",
    "AutoMLMModelOutput",
    "AutoMLMPreTrainedModel",
    "__version__",
    "contrastive_loss",
    "mask_tokens",
    "pool",
]
