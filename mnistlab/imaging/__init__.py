"""Pictures in, MNIST-style 28x28 digits out; torch-free, so reading a picture never waits for torch.

image:      opening files safely (raster formats only, size caps, EXIF turns, one-line errors).
preprocess: finding the ink and framing it as MNIST's digits were (20x20 inside 28x28, centred by mass).
sheet:      finding a sheet of paper in a photo and cutting it out flat.

Both reading/ (predict, draw, serve) and data/ (a user's image folders) prepare pictures here, so a
model is trained on exactly the 28x28s it will later read.
"""
