"""The REST API through a real HTTP client against a running server: images in, JSON out, error codes."""

import base64
import io
import math
import os

import httpx
import numpy as np
import pytest
from PIL import Image

from skinlesion.inference.onnx_export import sha256_file
from skinlesion.serve.loadtest import bomb_png, corrupt_png, encoded
from skinlesion.serve.process import running_server
from tests.helpers import CLASSES, synthetic_image

LIMIT_MB = 3


@pytest.fixture(scope="module")
def client(deployed):
    with (
        running_server(deployed.onnx, [f"max_upload_mb={LIMIT_MB}"]) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        yield http


def post(client: httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/api/predict", files={"file": (name, data, "application/octet-stream")})


def photo(size=(90, 70)) -> Image.Image:
    return synthetic_image((200, 60, 60), seed=3, size=max(size)).resize(size)


def strings(tree) -> list[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(tree, dict):
        return [s for k, v in tree.items() for s in [k, *strings(v)]]
    if isinstance(tree, list):
        return [s for v in tree for s in strings(v)]
    return [tree] if isinstance(tree, str) else []


def test_health_and_openapi(client, deployed):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"]["class_names"] == CLASSES
    assert health["model"]["thresholds"]["set_level"] == 0.9
    assert health["model"]["max_upload_bytes"] == LIMIT_MB * 1024 * 1024
    # which model, by hash and run name; no path of the server's file system
    source = health["model"]["source"]
    assert source["checkpoint_sha256"] == sha256_file(deployed.ckpt)
    assert source["run"] == deployed.ckpt.parent.parent.name  # the fixture's run dir is not under outputs/
    server_dirs = {str(deployed.ckpt.parent.parent.parent), str(deployed.onnx.parent)}
    assert not [s for s in strings(health) if s.startswith("/") or any(d in s for d in server_dirs)]
    schema = client.get("/openapi.json").json()
    documented = schema["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415"} <= set(documented)
    assert "PredictResponse" in schema["components"]["schemas"]


def test_the_page_carries_the_notice(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Research tool, not a medical device" in page.text and 'id="file"' in page.text


def test_a_photo_gets_probabilities_an_answer_and_a_heatmap(client):
    r = post(client, "lesion.png", encoded(photo()))
    assert r.status_code == 200
    body = r.json()
    assert set(body["probabilities"]) == set(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1)
    assert body["top_class"] == max(body["probabilities"], key=body["probabilities"].get)
    members = body["prediction_set"]
    assert body["prediction"] == (members[0] if len(members) == 1 else None)  # never one class of several
    # two or three val photos per class are too few for a 90 % promise: every class is in every set
    by_probability = sorted(CLASSES, key=lambda c: -body["probabilities"][c])
    assert members == ([] if body["abstained"] else by_probability) and body["set_level"] == 0.9
    assert body["notice"].startswith("Research tool, not a medical device")
    if body["reason"] != "out_of_distribution":
        png = base64.b64decode(body["heatmap"].removeprefix("data:image/png;base64,"))
        assert Image.open(io.BytesIO(png)).size == (64, 64)  # the model's view of the photo
    quiet = client.post(
        "/api/predict", params={"explain": "false"}, files={"file": ("a.png", encoded(photo()))}
    )
    assert quiet.status_code == 200 and quiet.json()["heatmap"] is None


def sixteen_bit() -> bytes:
    arr = (np.linspace(0, 65535, 80 * 60).reshape(60, 80)).astype(np.uint16)
    return encoded(Image.fromarray(arr), "TIFF")


CONVERTED = {
    "rgba.png": lambda: encoded(photo().convert("RGBA")),
    "grey.png": lambda: encoded(photo().convert("L")),
    "palette.gif": lambda: encoded(photo().convert("P"), "GIF"),
    "cmyk.jpg": lambda: encoded(photo().convert("CMYK"), "JPEG"),
    "sixteen.tif": sixteen_bit,
    "photo.webp": lambda: encoded(photo(), "WEBP"),
    "large.jpg": lambda: encoded(photo((3000, 2000)), "JPEG", quality=85),
    "small.bmp": lambda: encoded(photo((12, 9)), "BMP"),
}


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_any_mode_format_and_size_is_converted_and_answered(client, name):
    r = post(client, name, CONVERTED[name]())
    assert r.status_code == 200, r.text
    assert sum(r.json()["probabilities"].values()) == pytest.approx(1)


def test_exif_orientation_is_applied(client):
    upright = photo((96, 48))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rotated = post(client, "exif.png", encoded(stored, exif=exif)).json()
    plain = post(client, "plain.png", encoded(upright)).json()
    ignored = post(client, "stored.png", encoded(stored)).json()

    # log-probabilities: the tiny test model is confident enough to round probabilities to 0 and 1
    def logp(answer):
        return [math.log(max(p, 1e-300)) for p in answer["probabilities"].values()]

    assert logp(rotated) == pytest.approx(logp(plain), abs=1e-4)
    assert logp(rotated) != pytest.approx(logp(ignored), abs=1e-4)


def wide() -> bytes:
    return encoded(Image.new("RGB", (50_000, 10), "white"))


BAD = [
    ("noise.bin", lambda: np.random.default_rng(0).bytes(5000), 415, "not a recognised image format"),
    ("notes.txt", lambda: b"hello, this is text\n" * 20, 415, "accepted: JPEG, PNG"),
    ("photo.eps", lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", 415, "not a recognised"),
    ("empty.png", lambda: b"", 400, "empty"),
    ("cut.png", lambda: encoded(photo())[:400], 400, "truncated"),
    ("garbage.png", lambda: corrupt_png(encoded(photo())), 400, "corrupt"),
    ("bomb.png", bomb_png, 400, "decompression bomb"),
    ("wide.png", wide, 400, "aspect ratio"),
    ("huge.bin", lambda: b"\0" * (2 * LIMIT_MB * 1024 * 1024), 413, "Content Too Large"),  # never parsed
    ("just_over.bin", lambda: b"\0" * (LIMIT_MB * 1024 * 1024 + 1), 413, f"over the {LIMIT_MB} MB limit"),
]


@pytest.mark.parametrize("name, make, status, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_uploads_get_a_4xx_with_a_message(client, name, make, status, fragment):
    r = post(client, name, make())
    assert r.status_code == status
    assert fragment in r.text  # JSON {"detail": ...}; Starlette's own 413 is plain text


def test_a_request_without_a_file_is_a_validation_error(client):
    assert client.post("/api/predict").status_code == 422


def test_chunked_uploads_over_the_limit_are_cut_off(client):
    def chunks():
        for _ in range(LIMIT_MB * 8):  # twice the limit
            yield b"\0" * (256 * 1024)

    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n\r\n'
    r = client.post(
        "/api/predict",
        content=(c for part in ([body], chunks()) for c in part),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413


def test_uploads_leave_nothing_behind(deployed, tmp_path):
    """Large uploads spool to the server's private temporary folder, removed when it stops."""
    cwd, spool = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    spool.mkdir()
    env = os.environ | {"TMPDIR": str(spool)}
    big = encoded(Image.fromarray(np.random.default_rng(1).integers(0, 255, (900, 900, 3), dtype=np.uint8)))
    assert 1024 * 1024 < len(big) < LIMIT_MB * 1024 * 1024  # over Starlette's in-memory spool size
    with running_server(deployed.onnx, [f"max_upload_mb={LIMIT_MB}"], cwd=cwd, env=env) as server:
        at_start = {p.name for p in spool.iterdir()}  # the private folder (and onnxruntime's .ses file)
        for data in (big, encoded(photo()), b"junk"):
            r = httpx.post(f"{server.url}/api/predict", files={"file": ("f", data)}, timeout=60)
            assert r.status_code < 500
        assert {p.name for p in spool.iterdir()} == at_start
        private = [spool / n for n in at_start if n.startswith("skinlesion-serve-")]
        assert len(private) == 1 and list(private[0].iterdir()) == []  # spooled uploads already gone
    assert list(cwd.iterdir()) == []
    assert {p.name for p in spool.iterdir()} == at_start - {private[0].name}  # removed on exit
