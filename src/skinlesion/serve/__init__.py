"""The web service: FastAPI app (``app``), its upload page (``static/index.html``), the CLI
(``python -m skinlesion.serve``) and a helper that runs it as a subprocess (``process``).

It runs the exported ONNX model with ONNX Runtime and never imports torch.
"""
