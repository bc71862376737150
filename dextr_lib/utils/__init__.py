"""Small shared tools with no knowledge of models or formats: safe file writes, limits, per-user folders, CPU load, torch.distributed."""
