"""Running a network on clicks: devices, pre-processing (crops and heatmaps), the runners (torch, ONNX Runtime, OpenVINO) and the batching engine. No files, no formats."""
