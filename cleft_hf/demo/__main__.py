"""`python -m cleft_hf.demo --output_dir outputs/demo` (what `make demo` runs)."""

from .run import main

main()
