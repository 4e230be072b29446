"""fewshot classify --task: a saved task grown with --add-support, shrunk with --remove-class, saved again."""

import json

import numpy as np
from cli_support import assert_clean_error, run
from PIL import Image

import fewshot_sdk as fs


def class_folder(root, name, level, count=2):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(level)
    for i in range(count):
        Image.fromarray(np.clip(rng.normal(level, 10, (32, 32)), 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_a_saved_task_grows_by_a_class_folder_and_is_saved_again(tmp_path, image_folder, checkpoint):
    task = fs.load(checkpoint).adapt(fs.SupportSet.from_folder(image_folder))
    task.save(tmp_path / "task")
    grey = class_folder(tmp_path / "more", "grey", 128)
    query = grey / "0.png"
    result = run("classify", "--task", tmp_path / "task", "--add-support", grey, "--save-task", tmp_path / "grown",
                 "--query", query, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    grown = fs.load_task(tmp_path / "grown")
    assert grown.class_names == ("dark", "light", "grey")
    direct = fs.load(checkpoint).adapt(
        fs.SupportSet.from_folders([image_folder / "dark", image_folder / "light", grey])
    )
    assert grown.predict([query]).class_names == direct.predict([query]).class_names
    assert json.loads(result.stdout[result.stdout.index("[") :])[0]["class"] == direct.predict([query]).class_names[0]

    shrunk = run("classify", "--task", tmp_path / "grown", "--remove-class", "light", "--save-task", tmp_path / "grown")
    assert_clean_error(shrunk, "--overwrite")
    shrunk = run("classify", "--task", tmp_path / "grown", "--remove-class", "light", "--save-task", tmp_path / "grown",
                 "--overwrite")  # fmt: skip
    assert shrunk.exit_code == 0, shrunk.output
    assert fs.load_task(tmp_path / "grown").class_names == ("dark", "grey")


def test_task_options_without_a_task_or_with_a_method_that_cannot_grow_are_one_line_errors(tmp_path, image_folder):
    assert_clean_error(run("classify", "--add-support", image_folder, "--save-task", tmp_path / "x"), "--task")
    maml = fs.create("maml", backbone={"hidden": 8}, n_way=3).adapt(fs.SupportSet.from_folder(image_folder))
    maml.save(tmp_path / "maml-task")
    grey = class_folder(tmp_path / "more", "grey", 128)
    result = run("classify", "--task", tmp_path / "maml-task", "--add-support", grey, "--save-task", tmp_path / "out")
    assert_clean_error(result, "adapt again")
    assert not (tmp_path / "out").exists()
