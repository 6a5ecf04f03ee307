"""The guided Faster R-CNN garment detector."""
