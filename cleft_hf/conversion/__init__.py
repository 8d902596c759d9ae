"""Reading the authors' CLEFT checkpoints (reference code layout) for `cleft_hf.convert_original_checkpoint`."""

from .reference_layout import (
    ConversionError,
    ReferenceLayout,
    inspect_reference_state_dict,
    load_reference_checkpoint,
    map_reference_state_dict,
)

__all__ = [
    "ConversionError",
    "ReferenceLayout",
    "inspect_reference_state_dict",
    "load_reference_checkpoint",
    "map_reference_state_dict",
]
