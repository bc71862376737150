"""Annotation and mask file formats: COCO, objects.json, label/mask images, mask PNGs and overlays. Pure data: never calls a model."""
