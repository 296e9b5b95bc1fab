"""Inference without torch: preprocessing, abstention, class activation maps, the ONNX runtime.

Nothing in this package imports torch, so ``serve`` (and ``predict`` on an exported model) starts in a
second and carries no PyTorch in memory; the checkpoint backend lives in
``skinlesion.inference.torch_backend``.
"""
