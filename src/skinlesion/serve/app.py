"""FastAPI app: ``POST /api/predict``, ``GET /health``, ``GET /`` (upload page), OpenAPI at /docs.

Request bodies over the upload limit are refused with 413 by FastAPI's ``max_body_size`` (declared
length, or counted while streaming) before anything is parsed. Uploads are decoded by the project's
one decoder with the upload limits (size, pixels, photo formats only), then run by a ``Predictor``
in a worker thread; at most ``concurrency`` inferences run at once so that a burst of requests
queues instead of oversubscribing the CPU. Status codes:
413 over the size limit, 415 for a file that is not an image in an accepted format, 400 for a
corrupt, truncated, degenerate or decompression-bomb image; the JSON body says which.
"""

from __future__ import annotations

import base64
from importlib import resources
from typing import Annotated, Literal

import anyio
from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse
from PIL import UnidentifiedImageError
from pydantic import BaseModel, Field

from skinlesion import __version__
from skinlesion.core.artifacts import run_name
from skinlesion.core.errors import ImageDecodeError
from skinlesion.core.task import root_cause
from skinlesion.inference.cam import png_bytes
from skinlesion.inference.runtime import Predictor

NOTICE = (
    "Research tool, not a medical device. It must never be used to diagnose anyone. "
    "See a doctor about any skin change that worries you."
)
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file
# What /health says of a model's origin (model.json's "source"): hashes and names, never a path.
PUBLIC_SOURCE = ("checkpoint_sha256", "backbone", "data_manifest_sha256", "git_commit")


class PredictResponse(BaseModel):
    file: str = Field(description="the uploaded file's name")
    prediction: str | None = Field(
        description="the class, only when the prediction set holds exactly one; null for a set of two "
        "or more and when the model abstains"
    )
    prediction_set: list[str] = Field(
        description="the classes the photo could be, most probable first: the true class is in it with "
        "probability set_level (class-conditional conformal); empty when the model abstains"
    )
    set_level: float | None = Field(description="stated coverage of prediction_set; null: top class alone")
    top_class: str = Field(description="the most probable class, given even when the model abstains")
    confidence: float = Field(description="calibrated probability of top_class")
    probabilities: dict[str, float] = Field(description="calibrated probability of each class")
    abstained: bool = Field(description="turned away by a gate: no class and an empty set")
    reason: Literal["out_of_distribution", "other_condition", "low_confidence"] | None
    message: str = Field(description="the answer in words, or why there is none")
    ood_score: float = Field(description="out-of-distribution score, compared with the fitted threshold")
    other_score: float = Field(
        description="other-rash score, compared with the fitted threshold (0: no gate)"
    )
    heatmap: str | None = Field(None, description="Grad-CAM overlay on the model's crop, PNG data URL")
    notice: str = NOTICE


class ErrorResponse(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    model: dict


def public_source(source: dict) -> dict:
    """model.json's record of where the model came from, with the checkpoint's path on this
    machine replaced by its run's name: /health is public, the server's file system is not."""
    return {"run": source.get("run") or run_name(source.get("checkpoint"))} | {
        k: source[k] for k in PUBLIC_SOURCE if k in source
    }


def upload_error(e: ImageDecodeError) -> HTTPException:
    """415 when the bytes are no accepted image format at all, 400 when they are a bad image."""
    status = 415 if isinstance(root_cause(e), UnidentifiedImageError) else 400
    return HTTPException(status, str(e))


def create_app(predictor: Predictor, concurrency: int = 1) -> FastAPI:
    """The ASGI app around one predictor, its body wrapped by the 413 guard."""
    limit = predictor.limits.max_bytes
    info = predictor.info
    page = resources.files("skinlesion.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(
        max_body_size=limit + MULTIPART_SLACK,  # larger bodies get 413 before they are parsed
        title="skinlesion",
        version=__version__,
        description=f"Skin-lesion photo classifier ({', '.join(info.class_names)}) with prediction sets, "
        f"abstention and Grad-CAM. {NOTICE}",
    )
    slots: dict[str, anyio.CapacityLimiter] = {}

    def limiter() -> anyio.CapacityLimiter:
        if "inference" not in slots:  # created inside the running event loop
            slots["inference"] = anyio.CapacityLimiter(concurrency)
        return slots["inference"]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/health", response_model=Health)
    async def health() -> dict:
        return {
            "status": "ok",
            "version": __version__,
            "model": {
                "class_names": info.class_names,
                "image_size": info.image_size,
                "thresholds": info.thresholds.to_json(),
                "max_upload_bytes": limit,
                "source": public_source(info.extra.get("source", {})),
            },
        }

    @app.post(
        "/api/predict",
        response_model=PredictResponse,
        responses={
            400: {"model": ErrorResponse, "description": "corrupt, truncated, degenerate or bomb image"},
            413: {"model": ErrorResponse, "description": "upload over the size limit"},
            415: {"model": ErrorResponse, "description": "not an image in an accepted format"},
        },
    )
    async def predict(
        file: Annotated[UploadFile, File(description="a photo: JPEG, PNG, WebP, GIF, BMP or TIFF")],
        explain: Annotated[bool, Query(description="include the Grad-CAM overlay")] = True,
    ) -> dict:
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload over the {limit / 2**20:g} MB limit")
        name = file.filename or "upload"
        try:
            pred = await anyio.to_thread.run_sync(
                lambda: predictor.predict_bytes(data, name, explain), limiter=limiter()
            )
        except ImageDecodeError as e:
            raise upload_error(e) from None
        out = pred.to_json()
        if pred.heatmap is not None:
            out["heatmap"] = "data:image/png;base64," + base64.b64encode(png_bytes(pred.heatmap)).decode()
        return out

    return app
