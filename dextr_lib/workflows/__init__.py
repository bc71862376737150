"""The only layer that joins a model with files: predict over objects.json or a COCO file, points from masks, ONNX export."""
