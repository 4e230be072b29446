"""The service's API through FastAPI's test client: tasks made from the example photos, grown, shrunk,
asked about, exported, deleted, and still there for a new app over the same folder."""

from __future__ import annotations

import numpy as np
import pytest

import fewshot_sdk as fs

QUERIES = ["flamingo_0020.jpg", "laptop_0020.jpg", "panda_0020.jpg", "pizza_0020.jpg", "starfish_0020.jpg"]


def test_a_task_made_from_photos_is_listed_and_shown(shared, photos):
    client, task_id, _ = shared
    shown = client.get(f"/tasks/{task_id}").json()
    assert [c["name"] for c in shown["classes"]] == photos.classes
    assert {c["count"] for c in shown["classes"]} == {5}
    assert shown["method"] == "protonet"
    assert shown["model"] == "protonet-photos"
    assert shown["threshold"] > 0
    assert task_id in [task["id"] for task in client.get("/tasks").json()["tasks"]]


def test_predict_answers_the_example_queries_with_the_apis_prediction(shared, photos, learner):
    client, task_id, _ = shared
    response = client.post(f"/tasks/{task_id}/predict", files=photos.queries(*QUERIES))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["class_names"] == ["flamingo", "laptop", "panda", "pizza", "starfish"]
    assert answer["files"] == QUERIES
    assert answer["rejected"] == [False] * 5
    assert answer["threshold"] == pytest.approx(client.get(f"/tasks/{task_id}").json()["threshold"])
    probs = np.array(answer["probs"])
    assert probs.shape == (5, 5) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    # the same numbers as the Python API on the same photos
    task = learner.adapt(fs.SupportSet.from_folder(photos.support_dir))
    expected = task.predict([photos.queries_dir / name for name in QUERIES], reject="auto")
    assert np.allclose(probs, expected.probs.numpy(), atol=1e-4)
    assert np.allclose(answer["novelty"], expected.novelty.numpy(), rtol=1e-4, atol=1e-4)


def test_transductive_predict_is_the_apis_and_a_bad_value_is_a_400(shared, photos, learner):
    client, task_id, _ = shared
    response = client.post(f"/tasks/{task_id}/predict?transductive=true", files=photos.queries(*QUERIES))
    assert response.status_code == 200, response.text
    task = learner.adapt(fs.SupportSet.from_folder(photos.support_dir))
    expected = task.predict([photos.queries_dir / name for name in QUERIES], reject="auto", transductive=True)
    assert not np.allclose(expected.probs.numpy(), task.predict([photos.queries_dir / n for n in QUERIES]).probs)
    assert np.allclose(response.json()["probs"], expected.probs.numpy(), atol=1e-4)
    bad = client.post(f"/tasks/{task_id}/predict?transductive=maybe", files=photos.queries("panda_0020.jpg"))
    assert bad.status_code == 400 and bad.json() == {"error": "transductive takes true or false, got 'maybe'"}


def test_reject_none_and_a_threshold_of_ones_own(shared, photos):
    client, task_id, _ = shared
    never = client.post(f"/tasks/{task_id}/predict?reject=none", files=photos.queries("panda_0020.jpg")).json()
    assert never["threshold"] is None and never["class_names"] == ["panda"]
    strict = client.post(f"/tasks/{task_id}/predict?reject=0", files=photos.queries("panda_0020.jpg")).json()
    assert strict["class_names"] == [None] and strict["rejected"] == [True]


def test_add_and_remove_classes_keep_a_calibrated_threshold(client, photos):
    task_id = client.post("/tasks", files=photos.support(["flamingo", "laptop", "panda"])).json()["id"]
    grown = client.post(f"/tasks/{task_id}/classes", files=photos.support(["pizza", "starfish"]))
    assert grown.status_code == 200, grown.text
    names = [c["name"] for c in grown.json()["classes"]]
    assert names == ["flamingo", "laptop", "panda", "pizza", "starfish"]
    assert grown.json()["threshold"] is not None  # calibrated again on the kept support images
    answer = client.post(f"/tasks/{task_id}/predict", files=photos.queries("pizza_0020.jpg")).json()
    assert answer["class_names"] == ["pizza"]

    shrunk = client.post(f"/tasks/{task_id}/classes/remove", json={"classes": ["pizza"]})
    assert shrunk.status_code == 200, shrunk.text
    assert [c["name"] for c in shrunk.json()["classes"]] == ["flamingo", "laptop", "panda", "starfish"]
    assert shrunk.json()["threshold"] is not None
    answer = client.post(f"/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg", "pizza_0020.jpg")).json()
    assert answer["class_names"][0] == "panda" and "pizza" not in answer["classes"]


def test_a_fine_tuned_task_answers_as_the_api_and_grows_by_fine_tuning_again(client, photos, learner):
    def api_task(classes):
        support = {name: sorted((photos.support_dir / name).iterdir()) for name in classes}
        return learner.adapt(fs.SupportSet.from_mapping(support), finetune="auto")

    made = client.post("/tasks?finetune=auto", files=photos.support(["flamingo", "laptop", "panda"]))
    assert made.status_code == 201, made.text
    assert made.json()["adapt_options"] == {"finetune": "auto"}
    task_id = made.json()["id"]
    queries = [photos.queries_dir / name for name in QUERIES]
    answer = client.post(f"/tasks/{task_id}/predict?reject=none", files=photos.queries(*QUERIES)).json()
    expected = api_task(["flamingo", "laptop", "panda"]).predict(queries)
    assert np.allclose(answer["probs"], expected.probs.numpy(), atol=1e-4)
    grown = client.post(f"/tasks/{task_id}/classes", files=photos.support(["pizza"]))
    assert grown.status_code == 200, grown.text
    assert grown.json()["adapt_options"] == {"finetune": "auto"} and grown.json()["threshold"] is not None
    answer = client.post(f"/tasks/{task_id}/predict?reject=none", files=photos.queries(*QUERIES)).json()
    expected = api_task(["flamingo", "laptop", "panda", "pizza"]).predict(queries)
    assert np.allclose(answer["probs"], expected.probs.numpy(), atol=1e-4)
    bad = client.post("/tasks?finetune=yes", files=photos.support(["flamingo", "laptop"]))
    assert bad.status_code == 400 and bad.json() == {"error": "finetune takes auto or none, got 'yes'"}


def test_the_onnx_download_runs_in_onnxruntime(shared, photos, tmp_path):
    from fewshot_sdk.export.runtime import OnnxClassifier

    client, task_id, root = shared
    response = client.get(f"/tasks/{task_id}/onnx")
    assert response.status_code == 200, response.text
    assert f"task-{task_id}.onnx" in response.headers["content-disposition"]
    path = tmp_path / "task.onnx"
    path.write_bytes(response.content)
    answer = OnnxClassifier(path).classify([photos.queries_dir / "starfish_0020.jpg"], reject="auto")
    assert answer.class_names == ["starfish"]
    # the saved folder's own task.onnx, bound to its task files: fs.load_task runs it too
    onnx_task = fs.load_task(root / task_id, runtime="onnxruntime")
    assert onnx_task.predict([photos.queries_dir / "laptop_0020.jpg"]).class_names == ["laptop"]
    again = client.get(f"/tasks/{task_id}/onnx")  # exported once: the second download is the same file
    assert again.content == response.content


def test_delete_removes_the_task_and_its_files(client, photos, tmp_path):
    task_id = client.post("/tasks", files=photos.support(["panda", "pizza"])).json()["id"]
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    assert client.get(f"/tasks/{task_id}").status_code == 404
    assert client.post(f"/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg")).status_code == 404
    leftovers = [p.name for p in (tmp_path / "tasks" / ".versions").iterdir()]
    assert leftovers == []


def test_a_new_app_over_the_same_folder_serves_the_same_tasks(make_client, photos, tmp_path):
    first = make_client()
    task_id = first.post("/tasks", files=photos.support()).json()["id"]
    before = first.post(f"/tasks/{task_id}/predict", files=photos.queries(*QUERIES)).json()
    restarted = make_client()  # a restart: a new app, a new store, the same folder
    assert [t["id"] for t in restarted.get("/tasks").json()["tasks"]] == [task_id]
    after = restarted.post(f"/tasks/{task_id}/predict", files=photos.queries(*QUERIES)).json()
    assert after["class_names"] == before["class_names"]
    assert np.allclose(after["probs"], before["probs"], atol=1e-6)
    # a task folder is a saved task: the SDK loads it as it is
    task = fs.load_task(tmp_path / "tasks" / task_id)
    assert list(task.class_names) == photos.classes


def test_tasks_share_the_servers_learner(shared, learner):
    client, task_id, _ = shared
    store = client.app.state.store
    assert store.task(task_id).learner is learner


def test_a_change_by_another_process_is_seen(shared, photos, learner):
    """Another replica's write (here: a second store over the folder) is read on the next request."""
    from fewshot_sdk.serve.tasks_store import TaskStore

    client, _, root = shared
    task_id = client.post("/tasks", files=photos.support(["flamingo", "laptop", "panda"])).json()["id"]
    client.post(f"/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg"))  # cached here now
    TaskStore(root, learner, "protonet-photos").remove_classes(task_id, ["laptop"])
    shown = client.get(f"/tasks/{task_id}").json()
    assert [c["name"] for c in shown["classes"]] == ["flamingo", "panda"]
    answer = client.post(f"/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg")).json()
    assert answer["classes"] == ["flamingo", "panda"]


def test_healthz_and_metrics(shared, photos):
    client, task_id, _ = shared
    assert client.get("/healthz").json()["status"] == "ok"
    client.post(f"/tasks/{task_id}/predict", files=photos.queries("panda_0020.jpg"))
    client.get("/tasks/ffffffffffffffff")
    text = client.get("/metrics").text
    assert "# TYPE fewshot_http_requests_total counter" in text
    assert 'fewshot_http_requests_total{route="/tasks/{task_id}/predict",method="POST",status="200"}' in text
    assert 'route="/tasks/{task_id}",method="GET",status="404"' in text
    quantile = 'fewshot_http_request_duration_seconds{route="/tasks/{task_id}/predict",method="POST",quantile="0.99"}'
    assert quantile in text
    assert "ffffffffffffffff" not in text  # labelled by route template, never by the path sent


def test_the_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/page/app.js"' in page.text and "http" not in page.text.lower().replace("http-equiv", "")
    assert client.get("/page/app.js").status_code == 200
    assert "text/css" in client.get("/page/style.css").headers["content-type"]
    assert client.get("/page/..%2Fapp.py").status_code == 404
