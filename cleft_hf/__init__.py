"""cleft-hf: CLEFT (contrastive language-image pretraining with a PEFT-adapted causal LLM) for medical images.

The model classes load on first use (`from cleft_hf import CLEFTModel`), so entry scripts answer `-h` without
importing torch.
"""

import logging

__version__ = "0.1.0"
# bitsandbytes, imported by peft and transformers whenever installed, logs on each import (and so does the `kernels`
# package, offline) that it could not fetch an optional CPU kernel from the Hub; it then runs its own CPU code. The
# same filter as cleft_hf.modeling.quantization_cleft, here without importing torch.
for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).addFilter(lambda record: "kernels-community" not in str(record.msg))
__all__ = ["CLEFTConfig", "CLEFTModel", "CLEFTOutput", "CLEFTProcessor", "CLEFTImageProcessor", "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'cleft_hf' has no attribute {name!r}")
