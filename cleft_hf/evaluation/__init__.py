"""Evaluation of CLEFT models: zero-shot (hand and learned prompts), linear probe, retrieval, plots, reports.

Import the submodules (`runner.run_evaluation`, `report.MetricRecord`, `embeddings`, `linear_probe`,
`retrieval`, `plots`); nothing is imported here, so the Hub card can read `report` without scikit-learn,
`evaluate` or matplotlib.
"""
