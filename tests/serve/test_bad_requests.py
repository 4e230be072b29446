"""Every bad request answers a 4xx with one line as ``{"error": ...}``, never a 500 or a traceback, and
touches nothing outside the tasks folder."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fewshot_sdk.errors import InputError
from fewshot_sdk.serve.limits import Limits
from fewshot_sdk.serve.settings import ServeSettings


def assert_error(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert "\n" not in message and "Traceback" not in message
    for word in words:
        assert word in message, message
    return message


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_an_oversized_upload_is_413_declared_or_streamed(make_client, photos):
    client = make_client(limits=Limits(max_request_bytes=200_000))
    big = [("a", ("a.jpg", b"\xff" * 150_000, "image/jpeg")), ("b", ("b.jpg", b"\xff" * 150_000, "image/jpeg"))]
    assert_error(client.post("/tasks", files=big), 413, "200,000-byte limit", "--max-request-mb")

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(40):
            yield b"x" * 10_000

    streamed = client.post("/tasks", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(streamed, 413, "200,000-byte limit")


def test_a_file_that_is_not_an_image(shared, photos):
    client, task_id, _ = shared
    files = [("images", ("notes.txt", b"just some text", "text/plain"))]
    assert_error(client.post(f"/tasks/{task_id}/predict", files=files), 400, "'notes.txt' is not an image")
    empty = [("images", ("empty.jpg", b"", "image/jpeg"))]
    assert_error(client.post(f"/tasks/{task_id}/predict", files=empty), 400, "'empty.jpg' is empty")
    truncated = [("images", ("cut.jpg", (photos.queries_dir / "panda_0020.jpg").read_bytes()[:2000], "image/jpeg"))]
    assert_error(client.post(f"/tasks/{task_id}/predict", files=truncated), 400, "'cut.jpg'")
    support = [*photos.support(["panda"]), ("pizza", ("pizza.txt", b"text", "text/plain"))]
    assert_error(client.post("/tasks", files=support), 400, "'pizza.txt' is not an image")


def test_too_many_pixels_is_refused_before_decoding(make_client, photos):
    client = make_client(limits=Limits(max_pixels=100 * 100))
    files = [("a", ("big.png", png(200, 100), "image/png")), ("b", ("small.png", png(50, 50), "image/png"))]
    assert_error(client.post("/tasks", files=files), 413, "'big.png' is 200x100 pixels", "--max-pixels")


def test_too_many_images(make_client, shared, photos):
    client = make_client(limits=Limits(max_images=3))
    assert_error(client.post("/tasks", files=photos.support()), 413, "too many images", "at most 3")


def test_unknown_tasks_and_ids_that_are_paths(shared, photos):
    client, _, root = shared
    for task_id in ("0123456789abcdef", "nothing", ".versions", ".locks", "%2e%2e%2fetc", "0123456789ABCDEF"):
        for response in (
            client.get(f"/tasks/{task_id}"),
            client.post(f"/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg")),
            client.post(f"/tasks/{task_id}/classes/remove", json={"classes": ["panda"]}),
            client.delete(f"/tasks/{task_id}"),
            client.get(f"/tasks/{task_id}/onnx"),
        ):
            assert response.status_code == 404, (task_id, response.text)
            assert set(response.json()) == {"error"}
    assert not (root / ".locks" / "0123456789abcdef").exists()  # an unknown id leaves no trace


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../x", ["looks like a path"]),
        ("a/b", ["looks like a path"]),
        ("..", ["looks like a path"]),
        ("c\\d", ["looks like a path"]),
        ("bell\x07", ["control characters"]),
        ("line\nbreak", ["control characters"]),
        ("esc\x1b[31m", ["control characters"]),
        (" padded", ["spaces"]),
        ("x" * 101, ["longer than 100"]),
    ],
)
def test_bad_class_names(shared, photos, name, words):
    client, task_id, root = shared
    files = photos.support(["panda"]) + [(name, f) for _, f in photos.support(["pizza"])]
    assert_error(client.post("/tasks", files=files), 400, *words)
    added = [(name, f) for _, f in photos.support(["pizza"])]
    assert_error(client.post(f"/tasks/{task_id}/classes", files=added), 400, *words)
    assert not (root.parent / "x").exists()


def test_class_names_in_json_are_checked_too(shared):
    client, task_id, _ = shared
    assert_error(client.post(f"/tasks/{task_id}/classes/remove", json={"classes": ["../x"]}), 400, "no classes")
    assert_error(client.post(f"/tasks/{task_id}/classes/remove", json={"classes": ["panda", "x\x00"]}), 400)


def test_malformed_json_and_wrong_shapes(shared):
    client, task_id, _ = shared
    url = f"/tasks/{task_id}/classes/remove"
    headers = {"content-type": "application/json"}
    assert_error(client.post(url, content=b'{"classes": [', headers=headers), 400, "not valid JSON")
    assert_error(client.post(url, json={"classes": "panda"}), 400, "classes")
    assert_error(client.post(url, json={"classes": []}), 400, "classes")
    assert_error(client.post(url, json={"classes": ["panda"], "extra": 1}), 400, "extra")
    assert_error(client.post(url, json=[1, 2]), 400)


def test_requests_the_sdk_refuses_pass_its_line_on(shared, photos):
    client, task_id, _ = shared
    one_class = client.post("/tasks", files=photos.support(["panda"]))
    assert_error(one_class, 400, "at least 2 classes")
    clash = client.post(f"/tasks/{task_id}/classes", files=photos.support(["panda"]))
    assert_error(clash, 400, "already has classes ['panda']")
    unknown = client.post(f"/tasks/{task_id}/classes/remove", json={"classes": ["zebra"]})
    assert_error(unknown, 400, "no classes ['zebra']")
    assert_error(client.post(f"/tasks/{task_id}/predict?reject=soon", files=photos.queries("panda_0020.jpg")), 400)
    assert_error(client.post(f"/tasks/{task_id}/predict?reject=nan", files=photos.queries("panda_0020.jpg")), 400)


def test_forms_that_are_not_image_uploads(shared):
    client, task_id, _ = shared
    assert_error(client.post("/tasks", json={"panda": "a.jpg"}), 400, "multipart/form-data")
    assert_error(client.post("/tasks", data={"panda": "/etc/passwd"}, files=[("x", ("x", b"1"))]), 400, "holds text")
    nothing = client.post(f"/tasks/{task_id}/predict", content=b"", headers={"content-type": "multipart/form-data"})
    assert nothing.status_code == 400 and set(nothing.json()) == {"error"}
    assert_error(client.put(f"/tasks/{task_id}"), 405)


def test_the_api_key_is_asked_for_on_every_request(make_client, photos):
    key = "k" * 32
    client = make_client(api_key=key)
    for response in (client.get("/tasks"), client.get("/healthz"), client.get("/metrics"), client.post("/tasks")):
        assert_error(response, 401, "API key")
    assert_error(client.get("/tasks", headers={"X-API-Key": "wrong" * 8}), 401, "wrong API key")
    assert client.get("/tasks", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/tasks", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/").status_code == 200  # the page itself holds no data; it asks for the key
    made = client.post("/tasks", files=photos.support(["panda", "pizza"]), headers={"X-API-Key": key})
    assert made.status_code == 201


def test_binding_beyond_loopback_needs_a_key(tmp_path):
    for host in ("0.0.0.0", "192.168.1.4", "::", "example.org"):
        with pytest.raises(InputError, match="API key"):
            ServeSettings(tasks=tmp_path, host=host).check()
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServeSettings(tasks=tmp_path, host=host).check()
    ServeSettings(tasks=tmp_path, host="0.0.0.0", api_key="k" * 16).check()
    with pytest.raises(InputError, match="16 or more"):
        ServeSettings(tasks=tmp_path, host="0.0.0.0", api_key="short").check()


def test_no_cors_unless_asked(make_client):
    preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    plain = make_client()
    assert "access-control-allow-origin" not in plain.get("/tasks", headers={"Origin": "http://example.test"}).headers
    assert "access-control-allow-origin" not in plain.options("/tasks", headers=preflight).headers
    allowed = make_client(cors_origins=("http://example.test",))
    answer = allowed.get("/tasks", headers={"Origin": "http://example.test"})
    assert answer.headers["access-control-allow-origin"] == "http://example.test"
    assert allowed.options("/tasks", headers=preflight).status_code == 200
