"""cleft-hf: CLEFT (contrastive language-image pretraining with a PEFT-adapted causal LLM) for medical images.

The model classes load on first use (`from cleft_hf import CLEFTModel`), so entry scripts answer `-h` without
importing torch.
"""

__version__ = "0.1.0"
__all__ = ["CLEFTConfig", "CLEFTModel", "CLEFTOutput", "CLEFTProcessor", "CLEFTImageProcessor", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'cleft_hf' has no attribute {name!r}")
