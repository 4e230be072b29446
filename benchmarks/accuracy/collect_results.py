"""Write the Omniglot accuracy tables of benchmarks/RESULTS.md from the bundled checkpoints' own records.

Every figure in a table is read from a checkpoint's ``config.json`` (written there by
``fewshot evaluate --record``), so the table cannot drift from what was measured.

    python benchmarks/accuracy/collect_results.py --protocol full      # evaluation alphabets (the papers' protocol)
    python benchmarks/accuracy/collect_results.py --protocol minimal   # the minimal splits' held-out characters
"""

from __future__ import annotations

import argparse
import json

from fewshot_sdk.registry import zoo_names, zoo_path

#: The papers' Omniglot figures (5w1s, 5w5s, 20w1s, 20w5s), trained on the full background set.
PAPERS: dict[str, tuple[str, ...]] = {
    "protonet": ("98.8", "99.7", "96.0", "98.9"),
    "siamese": ("97.3", "98.4", "88.2", "97.0"),
    "matching": ("98.1", "98.9", "93.8", "98.5"),
    "matching-fce": ("98.1", "98.9", "93.8", "98.5"),
    "relation": ("99.6", "99.8", "97.6", "99.1"),
    "maml": ("98.7", "99.9", "95.8", "98.9"),
    "fomaml": ("98.3", "99.2", "89.4", "97.9"),
    "reptile": ("97.7", "99.5", "89.4", "97.1"),
    "metanet": ("98.95", "-", "97.0", "-"),
}
PROTOCOLS = ((5, 1), (5, 5), (20, 1), (20, 5))


def describe_training(training: dict | None) -> str:
    """ "600 + 5000 episodes, 20-way 1-shot" for a run continued (``--init``) from an earlier one."""
    if not training:
        return "unknown"
    runs, backbone_from = [training], None
    while runs[-1].get("init_training"):
        earlier = runs[-1]["init_training"]
        backbone_from = earlier.get("extra", {}).get("backbone_only")
        if backbone_from:  # only the backbone came from that run (``--backbone-from``): not this model's training
            break
        runs.append(earlier)
    episodes = " + ".join(str(run.get("episodes")) for run in reversed(runs))
    described = f"{episodes} episodes, {training.get('n_way')}-way {training.get('k_shot')}-shot"
    return f"{described}, backbone from `{backbone_from}`" if backbone_from else described


#: which recorded results each table shows: the evaluation set, or the minimal splits' own test characters
DATASETS = {"full": "omniglot-evaluation", "minimal": None}


def row(name: str, protocol: str) -> str | None:
    path = zoo_path(name)
    assert path is not None
    config = json.loads((path / "config.json").read_text())
    if not name.endswith("-omniglot"):
        return None
    provenance = config["provenance"]
    wanted = DATASETS[protocol]
    found = {
        (r["n_way"], r["k_shot"]): r
        for r in provenance["results"]
        if r["split"] == "test" and r.get("dataset") == wanted and not r.get("within_group")
    }
    if not found:
        return None
    training = provenance.get("training") or {}
    if (protocol == "full") != (training.get("dataset") == "omniglot-background"):
        return None  # each table shows the models trained for its protocol
    cells = []
    for protocol in PROTOCOLS:
        result = found.get(protocol)
        if result is None:
            cells.append("not measured")
            continue
        cell = f"{100 * result['accuracy']:.2f} ± {100 * result['ci95']:.2f}"
        cells.append(cell if result["episodes"] >= 600 else f"{cell} ({result['episodes']} episodes only)")
    lake = provenance.get("lake_runs")
    lake_cell = f"{100 * lake['accuracy']:.2f} ({lake['correct']}/{lake['test_images']})" if lake else "not measured"
    trained = describe_training(provenance.get("training"))
    method = name.removesuffix("-omniglot")
    paper = " / ".join(PAPERS.get(method, ("-",) * 4))
    return f"| `{name}` | {' | '.join(cells)} | {lake_cell} | {paper} | {trained} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(DATASETS), default="full")
    protocol = parser.parse_args().protocol
    columns = ["model", "5-way 1-shot", "5-way 5-shot", "20-way 1-shot", "20-way 5-shot", "Lake's 20 runs"]
    columns += ["paper (5w1s / 5w5s / 20w1s / 20w5s)", "trained"]
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in zoo_names():
        line = row(name, protocol)
        if line:
            print(line)


if __name__ == "__main__":
    main()
