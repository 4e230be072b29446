import numpy as np
import pytest
import torch
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.errors import InputError


@pytest.fixture(scope="module")
def learner():
    torch.manual_seed(0)
    return fs.create("protonet")


def test_available_lists_methods_and_create_validates_settings():
    assert "protonet" in fs.available()["methods"]
    with pytest.raises(InputError, match="unknown method 'nope'"):
        fs.create("nope")
    with pytest.raises(InputError, match="metric"):
        fs.create("protonet", metric="manhattan")
    with pytest.raises(InputError, match="not_a_setting") as refused:
        fs.create("protonet", not_a_setting=1)
    # a name that is no setting is answered with the ones there are, as --set takes them (JSON values)
    assert 'the settings of protonet (defaults): metric="sqeuclidean", temperature=1.0' in str(refused.value)
    with pytest.raises(InputError, match="inner_lr") as refused:
        fs.create("maml", inner_lr=-1.0)
    assert "the settings of" not in str(refused.value)  # a bad value of a real setting: no list


def test_support_from_folder_mapping_and_tensors_agree(learner, image_folder):
    from_folder = fs.SupportSet.from_folder(image_folder)
    assert from_folder.class_names == ("dark", "light") and from_folder.shots() == {"dark": 3, "light": 3}
    mapping = {name: sorted((image_folder / name).glob("*.png")) for name in ("dark", "light")}
    pil_mapping = {name: [Image.open(p) for p in paths] for name, paths in mapping.items()}
    x = learner.preprocess([p for paths in mapping.values() for p in paths])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    states = [
        learner.adapt(support).state["prototypes"]
        for support in (
            from_folder,
            fs.SupportSet.from_mapping(pil_mapping),
            fs.SupportSet.from_tensors(x, y, class_names=["dark", "light"]),
        )
    ]
    torch.testing.assert_close(states[0], states[1])
    torch.testing.assert_close(states[0], states[2])


def test_predict_accepts_paths_pil_arrays_and_tensors(learner, image_folder):
    task = learner.adapt(fs.SupportSet.from_folder(image_folder))
    path = next((image_folder / "light").glob("*.png"))
    by_path = task.predict(str(path))
    assert by_path.class_names == ["light"] and by_path.probs.shape == (1, 2)
    torch.testing.assert_close(by_path.probs.sum(1), torch.ones(1))
    image = Image.open(path)
    array = np.asarray(image)
    batch = task.preprocess([path, path])
    for query in ([path], [image], image, array, batch, list(batch)):
        assert task.predict(query).class_names[0] == "light"
    assert task.predict(batch).top_k(5)[0][0][0] == "light"  # k clipped to the 2 classes
    assert len(task.predict(batch).top_k(5)[0]) == 2


def test_adapt_does_not_mutate_the_learner(learner, image_folder):
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    learner.adapt(fs.SupportSet.from_folder(image_folder)).predict(torch.zeros(2, 1, 28, 28))
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not learner.training


def test_bad_support_is_refused_with_a_clear_message(tmp_path, image_folder, learner):
    with pytest.raises(InputError, match="folder not found"):
        fs.SupportSet.from_folder(tmp_path / "missing")
    (tmp_path / "only" / "cats").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "only" / "cats" / "a.png")
    with pytest.raises(InputError, match=r"at least 2 classes; got 1 \('cats'\)"):
        fs.SupportSet.from_folder(tmp_path / "only")
    (image_folder / "empty").mkdir()
    with pytest.raises(InputError, match="empty holds no image files"):
        fs.SupportSet.from_folder(image_folder)
    with pytest.raises(InputError, match="x has 3 examples but y has 2 labels"):
        fs.SupportSet.from_tensors(torch.zeros(3, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="every class index"):
        fs.SupportSet.from_tensors(torch.zeros(2, 1, 28, 28), torch.tensor([0, 2]))
    with pytest.raises(InputError, match="NaN"):
        fs.SupportSet.from_tensors(torch.full((2, 1, 28, 28), float("nan")), torch.tensor([0, 1]))
    wrong_size = fs.SupportSet.from_tensors(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(InputError, match=r"support tensor x has shape \(2, 1, 32, 32\)"):
        learner.adapt(wrong_size)
    with pytest.raises(InputError, match="adapt takes a fs.SupportSet"):
        learner.adapt({"a": []})  # type: ignore[arg-type]


def test_bad_queries_are_refused(learner, image_folder):
    task = learner.adapt(fs.SupportSet.from_folder(image_folder))
    with pytest.raises(InputError, match="no query images"):
        task.predict([])
    with pytest.raises(InputError, match=r"query has shape \(1, 3, 28, 28\)"):
        task.predict(torch.zeros(1, 3, 28, 28))
    with pytest.raises(InputError, match="image not found"):
        task.predict("nowhere.png")


def test_one_learner_serves_many_tasks_from_many_threads(learner, omniglot_splits):
    from concurrent.futures import ThreadPoolExecutor

    from fewshot_sdk.data.episodes import EpisodeSampler

    episodes = EpisodeSampler(omniglot_splits.test, 5, 1, 3, seed=4).episodes(6)

    def run(episode):
        support = fs.SupportSet.from_tensors(episode.support_x, episode.support_y)
        return learner.adapt(support).predict(episode.query_x).probs

    serial = [run(e) for e in episodes]
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(run, episodes))
    for a, b in zip(serial, threaded, strict=True):
        torch.testing.assert_close(a, b)
