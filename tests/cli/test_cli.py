import json

from cli_support import assert_clean_error, run
from PIL import Image

import fewshot_sdk as fs
from fewshot_sdk.config import LakeRunsResult


def test_classify_with_the_bundled_model_gets_the_examples_right(examples_dir):
    classes = sorted((examples_dir / "support").iterdir())
    support = [x for c in classes for x in ("--support", c)]
    result = run("classify", "--model", "protonet-omniglot", *support, "--query", examples_dir / "queries", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # glyphs for a glyph model: no out-of-domain warning
    rows = json.loads(result.output)
    assert len(rows) == 3
    for row in rows:
        assert row["query"].split("/")[-1].startswith(row["class"]), row
        assert row["probability"] > 0.5


def test_classify_one_root_with_class_subfolders_and_top_k(image_folder, checkpoint):
    query = next((image_folder / "dark").glob("*.png"))
    result = run("classify", "--support", image_folder, "--query", query, "--model", checkpoint, "--top-k", 2)
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith(f"{query}: ") and "dark" in line and "light" in line


def test_classify_refuses_bad_input_with_one_line(tmp_path, image_folder, checkpoint):
    query = next((image_folder / "dark").glob("*.png"))
    assert_clean_error(
        run("classify", "--support", tmp_path / "nope", "--query", query, "--model", checkpoint), "folder not found"
    )
    assert_clean_error(
        run("classify", "--support", image_folder / "dark", "--query", query, "--model", checkpoint),
        "only one class given",
    )
    (image_folder / "empty").mkdir()
    assert_clean_error(
        run("classify", "--support", image_folder, "--query", query, "--model", checkpoint),
        "empty holds no image files",
    )
    (image_folder / "empty").rmdir()
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    assert_clean_error(
        run("classify", "--support", image_folder, "--query", bad, "--model", checkpoint), "bad.png is not an image"
    )
    assert_clean_error(
        run("classify", "--support", image_folder, "--query", tmp_path / "none.png", "--model", checkpoint),
        "query image not found",
    )
    assert_clean_error(run("classify", "--query", query, "--model", checkpoint), "--support")


def test_classify_refuses_a_corrupt_checkpoint(tmp_path, image_folder, checkpoint):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "weights.safetensors").write_bytes(b"\x00" * 10)
    query = next((image_folder / "dark").glob("*.png"))
    assert_clean_error(
        run("classify", "--support", image_folder, "--query", query, "--model", broken),
        "not a readable safetensors file",
    )


def test_classify_refuses_a_decompression_bomb(tmp_path, image_folder, checkpoint, monkeypatch):
    from fewshot_sdk import imageio as images

    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 32 * 32)  # the support images are 32x32
    big = tmp_path / "big.png"
    Image.new("L", (40, 40)).save(big)
    assert_clean_error(
        run("classify", "--support", image_folder, "--query", big, "--model", checkpoint), "big.png is 40x40 pixels"
    )


def test_train_then_evaluate_writes_a_checkpoint_with_its_results(tmp_path, minimal_omniglot_dir):
    omniglot_dir = minimal_omniglot_dir  # the minimal splits keep the training tests fast
    out = tmp_path / "trained"
    result = run(
        "train",
        "--out",
        out,
        "--data",
        omniglot_dir,
        "--episodes",
        3,
        "--n-way",
        5,
        "--val-every",
        3,
        "--val-episodes",
        2,
        "--set",
        'metric="cosine"',
    )
    assert result.exit_code == 0, result.output
    assert fs.load(out).config.metric == "cosine"
    assert fs.load(out).provenance.training.split_seed == 0
    assert_clean_error(run("train", "--out", out, "--data", omniglot_dir, "--episodes", 1), "--overwrite")

    result = run(
        "evaluate",
        "--model",
        out,
        "--data",
        omniglot_dir,
        "--n-way",
        5,
        "--k-shot",
        1,
        "--episodes",
        4,
        "--json",
        "--record",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    (entry,) = payload["episodes"]
    assert entry["n_way"] == 5 and entry["episodes"] == 4 and 0 <= entry["accuracy"] <= 1
    assert fs.load(out).provenance.results[0].episodes == 4

    more = tmp_path / "continued"
    result = run("train", "--init", out, "--out", more, "--data", omniglot_dir, "--episodes", 2, "--n-way", 5,
                 "--val-every", 2, "--val-episodes", 2, "--set", 'metric="sqeuclidean"')  # fmt: skip
    assert result.exit_code == 0, result.output
    continued = fs.load(more)
    assert continued.method == "protonet" and continued.config.metric == "sqeuclidean"
    assert continued.provenance.results == [] and continued.provenance.training.init_training.episodes == 3
    assert_clean_error(run("train", "--init", out, "--out", more, "--data", omniglot_dir, "--method", "maml",
                           "--overwrite"), "does not match")  # fmt: skip
    assert_clean_error(run("train", "--init", out, "--out", more, "--data", omniglot_dir, "--backbone", "resnet12",
                           "--overwrite"), "--backbone")  # fmt: skip
    assert_clean_error(run("train", "--init", out, "--out", more, "--data", omniglot_dir, "--split-seed", 1,
                           "--overwrite"), "--split-seed 0")  # fmt: skip


def test_evaluate_on_lake_runs_and_models_listing(checkpoint, omniglot_dir):
    result = run("evaluate", "--model", checkpoint, "--lake-runs", omniglot_dir / "all_runs.zip")
    assert result.exit_code == 0, result.output
    assert "Lake's 20 runs:" in result.output and "/400)" in result.output
    listing = run("models", "--json")
    assert listing.exit_code == 0
    assert "protonet" in json.loads(listing.output)["methods"]


def test_evaluate_fine_tunes_and_transduces_lakes_runs_too_and_keeps_the_plain_figure_on_the_card(
    checkpoint, omniglot_dir, tmp_path
):
    model = fs.load(checkpoint).save(tmp_path / "model")
    runs = omniglot_dir / "all_runs.zip"
    plain = run("evaluate", "--model", model, "--lake-runs", runs, "--record", "--json")
    assert plain.exit_code == 0, plain.output
    recorded = fs.load(model).provenance.lake_runs
    assert recorded == LakeRunsResult(**json.loads(plain.output)["lake_runs"]) and not recorded.adapt_options

    adapted = run("evaluate", "--model", model, "--lake-runs", runs, "--record", "--finetune", "auto", "--transductive")
    assert adapted.exit_code == 0, adapted.output
    assert "/400, fine-tuned, transductive)" in adapted.output
    assert fs.load(model).provenance.lake_runs == recorded  # the card's figure is the plain protocol's
    as_json = run("evaluate", "--model", model, "--lake-runs", runs, "--finetune", "auto", "--json")
    lake = json.loads(as_json.output)["lake_runs"]
    assert lake["adapt_options"] == {"finetune": "auto"} and lake["transductive"] is False
    assert lake["per_run_errors"] != recorded.per_run_errors  # the tasks were fine-tuned: other answers


def test_evaluate_with_the_backbone_in_onnxruntime_gets_the_same_figures(checkpoint, omniglot_dir):
    runs = omniglot_dir / "all_runs.zip"
    torch_result = run("evaluate", "--model", checkpoint, "--lake-runs", runs, "--json")
    onnx_result = run("evaluate", "--model", checkpoint, "--lake-runs", runs, "--json", "--runtime", "onnxruntime")
    assert torch_result.exit_code == 0 and onnx_result.exit_code == 0, onnx_result.output
    assert json.loads(onnx_result.output)["lake_runs"] == json.loads(torch_result.output)["lake_runs"]
    assert_clean_error(run("evaluate", "--model", checkpoint, "--lake-runs", runs, "--runtime", "tvm"), "runtime")


def test_evaluate_needs_something_to_evaluate_on(checkpoint):
    assert_clean_error(run("evaluate", "--model", checkpoint), "--lake-runs")


def test_evaluate_on_full_omniglot_runs_the_papers_protocol_on_the_evaluation_set(checkpoint, omniglot_dir):
    result = run("evaluate", "--model", checkpoint, "--data", omniglot_dir, "--episodes", 2, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    settings = [(e["n_way"], e["k_shot"]) for e in payload["episodes"]]
    assert settings == [(5, 1), (5, 5), (20, 1), (20, 5)]
    assert all(e["dataset"] == "omniglot-evaluation" and not e["within_group"] for e in payload["episodes"])
    assert payload["lake_runs"]["test_images"] == 400  # all_runs.zip from the same folder
    within = run("evaluate", "--model", checkpoint, "--data", omniglot_dir, "--episodes", 2, "--n-way", 20,
                 "--k-shot", 1, "--within-alphabet", "--json")  # fmt: skip
    assert within.exit_code == 0, within.output
    assert [e["within_group"] for e in json.loads(within.output)["episodes"]] == [True]


def test_evaluate_over_domains_prints_each_and_the_mean(tmp_path, examples_dir):
    import shutil

    for name, count in (("glyphs_a", 3), ("glyphs_b", 2)):
        for folder in sorted((examples_dir / "support").iterdir())[:count]:
            shutil.copytree(folder, tmp_path / name / folder.name)
    args = ["evaluate", "--model", "protonet-omniglot", "--k-shot", 1, "--queries", 2, "--episodes", 3]
    result = run(*args, "--domain", tmp_path / "glyphs_a", "--domain", tmp_path / "glyphs_b", "--transductive")
    assert result.exit_code == 0, result.output
    assert "glyphs_a, 3-way 1-shot:" in result.output and "glyphs_b, 2-way 1-shot:" in result.output
    mean = "mean of glyphs_a (3-way), glyphs_b (2-way), 5-way 1-shot:"
    assert mean in result.output and "transductive" in result.output
    assert_clean_error(run(*args, "--domain", tmp_path / "missing"), "missing")


def test_classify_transductive_and_where_it_cannot_run(examples_dir, tmp_path):
    photos = examples_dir / "photos"
    result = run("classify", "--support", photos / "support", "--query", photos / "queries", "--transductive")
    assert result.exit_code == 0, result.output
    assert [line.split(": ")[1].split(" ")[0] for line in result.output.strip().splitlines()] == [
        "flamingo",
        "laptop",
        "panda",
        "pizza",
        "starfish",
    ]
    glyphs = [
        "--model",
        "matching-omniglot",
        "--support",
        examples_dir / "support",
        "--query",
        examples_dir / "queries",
    ]
    assert_clean_error(run("classify", *glyphs, "--transductive"), "has none")
    onnx = run("classify", "--model", tmp_path / "t.onnx", "--query", photos / "queries", "--transductive")
    assert_clean_error(onnx, "drop --transductive")
