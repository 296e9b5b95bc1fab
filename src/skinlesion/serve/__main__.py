"""``python -m skinlesion.serve [host=...] [port=...] [model_path=.../model.onnx]``: run the web service.

Uploads that Starlette spools to disk go to a private temporary directory, removed on exit: nothing
from a request is written anywhere else.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from skinlesion.core.errors import ConfigError
from skinlesion.core.task import command
from skinlesion.inference.runtime import UPLOAD_LIMITS, OnnxBackend, Predictor

log = logging.getLogger("skinlesion.serve")


def serve(cfg: DictConfig) -> None:
    import uvicorn

    from skinlesion.serve.app import create_app

    if not 0 < cfg.max_upload_mb <= 100:
        raise ConfigError(f"max_upload_mb must be in (0, 100], got {cfg.max_upload_mb}")
    limits = replace(UPLOAD_LIMITS, max_bytes=int(cfg.max_upload_mb * 1024 * 1024))
    predictor = Predictor(OnnxBackend(Path(cfg.model_path), int(cfg.threads)), limits)
    app = create_app(predictor, int(cfg.concurrency))
    # uvicorn re-raises SIGTERM after its graceful shutdown; as an exception it lets the folder go
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="skinlesion-serve-") as spool:
        tempfile.tempdir = spool  # Starlette spools large uploads with tempfile
        log.info(
            "serving %s on http://%s:%d (research tool, not a medical device)",
            cfg.model_path,
            cfg.host,
            cfg.port,
        )
        uvicorn.run(
            app, host=cfg.host, port=int(cfg.port), log_level=cfg.log_level, access_log=cfg.access_log
        )


main = command(serve, "serve")


if __name__ == "__main__":
    main()
