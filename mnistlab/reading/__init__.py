"""Reading people's digits: opening image files (image), preparing them MNIST-style (preprocess),
classifying them with a checkpoint or an exported .onnx model (predict, onnxmodel), the drawing window
(draw), ONNX export (export) and the web service (serve, page.html). weights/ holds the shipped model. Nothing in mnistlab imports this package but the command line."""
