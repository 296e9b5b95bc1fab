"""Inference: from a model (checkpoint or ONNX) and a photo to an answer.

``preprocess``, ``decision``, ``cam``, ``runtime`` and ``inputs`` import no torch, so ``serve`` (and
``predict`` on an exported model) starts in a second and carries no PyTorch in memory.
``torch_backend`` (the checkpoint backend), ``loading`` (checkpoints and their data),
``onnx_export`` and ``other_rash`` (the other-rash gate's data) need torch and are imported only by
the commands that load checkpoints.
"""
