"""CLEFT model definition: config, model, processor (travels to the Hub; imports torch/transformers/peft/timm)."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_cleft import CLEFTConfig
from .image_processing_cleft import CLEFTImageProcessor
from .modeling_cleft import CLEFTModel, CLEFTOutput, CLEFTPreTrainedModel
from .processing_cleft import CLEFTProcessor

AutoConfig.register(CLEFTConfig.model_type, CLEFTConfig, exist_ok=True)
AutoModel.register(CLEFTConfig, CLEFTModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(CLEFTConfig, CLEFTModel, exist_ok=True)
# One class for every backend: transformers asks for torchvision's when it is installed, PIL's otherwise.
AutoImageProcessor.register(
    CLEFTConfig,
    image_processor_classes={"torchvision": CLEFTImageProcessor, "pil": CLEFTImageProcessor},
    exist_ok=True,
)
AutoProcessor.register(CLEFTConfig, CLEFTProcessor, exist_ok=True)

# Saved folders carry `auto_map` and these files, so `trust_remote_code=True` loads without cleft_hf.
CLEFTConfig.register_for_auto_class()
CLEFTModel.register_for_auto_class("AutoModel")
CLEFTImageProcessor.register_for_auto_class("AutoImageProcessor")
CLEFTProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CLEFTConfig", "CLEFTModel", "CLEFTOutput", "CLEFTPreTrainedModel", "CLEFTProcessor", "CLEFTImageProcessor"]
