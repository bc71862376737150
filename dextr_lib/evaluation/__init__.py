"""How good is a model: metrics, baselines, evaluating on a dataset and the report."""
