"""Reading people's digits: opening image files (image), preparing them MNIST-style (preprocess),
classifying them with a checkpoint (predict), and the drawing window (draw). weights/ holds the
shipped model. Nothing in mnistlab imports this package but the command line."""
