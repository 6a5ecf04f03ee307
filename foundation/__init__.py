"""The bottom layer: the attribute schema, products and dumps, images, model files, atomic writes."""
