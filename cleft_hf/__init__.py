"""cleft-hf: CLEFT (contrastive language-image pretraining with a PEFT-adapted causal LLM) for medical images."""

from .modeling import CLEFTConfig, CLEFTImageProcessor, CLEFTModel, CLEFTOutput, CLEFTProcessor

__version__ = "0.1.0"
__all__ = ["CLEFTConfig", "CLEFTModel", "CLEFTOutput", "CLEFTProcessor", "CLEFTImageProcessor", "__version__"]
