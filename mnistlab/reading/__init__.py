"""Reading people's digits with a trained model: classifying pictures (predict, with a checkpoint or an
exported .onnx model through onnxmodel), the drawing window (draw), ONNX export (export) and the web
service (serve, page.html). The pictures are prepared by mnistlab.imaging. weights/ holds the shipped
model. Nothing in mnistlab imports this package but the command line and the Python API."""
