"""Networks and their weights: architectures, checkpoint files, legacy imports, the model zoo and its downloads, loading any ``--model`` spec."""
