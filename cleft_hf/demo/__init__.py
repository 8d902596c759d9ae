"""The built-in demo, kept apart from the library (`cleft_hf.data`, `cleft_hf.evaluation`, ...) and the trainer
(`cleft_hf.training`): synthetic data writers in the real on-disk formats (`synthetic`), a small causal LM made on
the fly (`language_model`), and `python -m cleft_hf.demo` with its config `demo.yaml` (package data)."""
