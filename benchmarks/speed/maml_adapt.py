"""MAML test-time adaptation + predict, the SDK against the loops users would otherwise write.

One 5-way 1-shot task of real glyphs (Omniglot's first background alphabet), the
bundled ``maml-omniglot`` weights (Conv4, 28x28, the head's first 5 rows), 5 inner
steps of alpha=0.4, then 75 queries classified. Every implementation starts from the same weights and runs in this one
process, interleaved round by round, so a drift in machine load hits all alike:

- ``sdk``: ``learner.adapt(SupportSet.from_tensors(...))`` then ``task.predict(queries)``,
  the default ``bn="support"`` (queries normalised with the support's statistics) and
  test-time step backtracking;
- ``sdk-method``: the same without the public API's wrapping
  (``adapt_tensors`` + ``score`` + softmax);
- ``sdk-transductive``: ``bn="transductive"`` through the public API (the paper's
  batch norm: the queries' own batch statistics);
- ``functional``: a bare ``torch.func.functional_call`` loop on the learner itself
  (batch statistics everywhere, i.e. transductive), no checks;
- ``l2l-style``: learn2learn's clone/``update_module`` pattern
  (:func:`inner_loop.baseline_adapt`), transductive;
- ``functional-plain`` and ``l2l-style-plain``: the same two loops on a copy of the network whose
  Conv4 runs as a plain ``nn.Sequential`` (NCHW throughout), the network a learn2learn or higher
  user holds (learn2learn's ``OmniglotCNN``); the SDK's own channels-last inference layout helps the
  two loops above as much as it helps the SDK, so these are the peers' figures;
- with ``--compile``, ``functional-compiled``: the bare loop with its support step
  (``torch.func.grad_and_value`` of the loss) through ``torch.compile``; its compile time is
  reported apart.

    python benchmarks/speed/maml_adapt.py [--rounds 7 --repeats 30] [--out benchmarks/results/maml_adapt_cpu.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inner_loop import baseline_adapt, plain_copy
from timing import device_name, median_seconds, report

import fewshot_sdk as fs
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.omniglot import load_background_characters

N_WAY, QUERIES, STEPS, LR = 5, 15, 5, 0.4


def five_way(bn: str) -> fs.Learner:
    """``maml-omniglot``'s weights in a 5-way model, so that every implementation runs the same network."""
    trained = fs.load("maml-omniglot")
    learner = fs.create("maml", n_way=N_WAY, inner_lr=LR, bn=bn).eval()
    state = trained.state_dict()
    state["head.weight"], state["head.bias"] = state["head.weight"][:N_WAY], state["head.bias"][:N_WAY]
    learner.load_state_dict(state)
    return learner


def glyph_task(learner: fs.Learner, data: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    characters = load_background_characters(data / "images_background_small1.zip", learner.preprocessor)
    episode = EpisodeSampler(characters, N_WAY, 1, QUERIES, seed=0).sample()
    return episode.support_x, episode.support_y, episode.query_x


def implementations(
    learner: fs.Learner, transductive: fs.Learner, task: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> dict[str, Callable[[], torch.Tensor]]:
    support_x, support_y, query_x = task
    support = fs.SupportSet.from_tensors(support_x, support_y)
    params = {name: p.detach() for name, p in learner.named_parameters()}
    plain = plain_copy(learner)

    def sdk() -> torch.Tensor:
        return learner.adapt(support, steps=STEPS).predict(query_x).probs

    def sdk_method() -> torch.Tensor:
        state = learner.adapt_tensors(support_x, support_y, N_WAY, steps=STEPS)
        with torch.no_grad():
            return learner.score(state, query_x).softmax(-1)

    def sdk_transductive() -> torch.Tensor:
        return transductive.adapt(support, steps=STEPS).predict(query_x).probs

    def functional(network: nn.Module = learner) -> torch.Tensor:
        values = {k: v.requires_grad_() for k, v in params.items()}
        for _ in range(STEPS):
            loss = F.cross_entropy(functional_call(network, values, (support_x,)), support_y)
            grads = torch.autograd.grad(loss, list(values.values()))
            values = {
                k: (v - LR * gr).detach().requires_grad_() for (k, v), gr in zip(values.items(), grads, strict=True)
            }
        with torch.no_grad():
            return functional_call(network, values, (query_x,)).softmax(-1)

    def support_loss(values: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(learner, values, (x,)), y)

    def functional_with(step: Callable) -> torch.Tensor:
        values = dict(params)
        for _ in range(STEPS):
            grads, _ = step(values, support_x, support_y)
            values = {k: v - LR * grads[k] for k, v in values.items()}
        with torch.no_grad():
            return functional_call(learner, values, (query_x,)).softmax(-1)

    compiled_step = torch.compile(torch.func.grad_and_value(support_loss))

    def l2l_style(network: nn.Module = learner) -> torch.Tensor:
        with torch.enable_grad():
            adapted = baseline_adapt(network, support_x, support_y, STEPS, LR, second_order=False)
        with torch.no_grad():
            return adapted(query_x).softmax(-1)

    return {
        "sdk": sdk,
        "sdk-method": sdk_method,
        "sdk-transductive": sdk_transductive,
        "functional": functional,
        "l2l-style": l2l_style,
        "functional-plain": lambda: functional(plain),
        "l2l-style-plain": lambda: l2l_style(plain),
        "functional-compiled": lambda: functional_with(compiled_step),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median of round medians")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per implementation per round")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/omniglot")
    parser.add_argument("--compile", action="store_true", help="also time the bare loop under torch.compile")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    learner, transductive = five_way("support"), five_way("transductive")
    runs = implementations(learner, transductive, glyph_task(learner, args.data))
    compile_note = ""
    if args.compile:
        # Cold, as a user's first compile is: inductor's on-disk cache from an earlier run of this script
        # would otherwise turn 25 s into 3 s.
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True
        start = time.perf_counter()
        torch.testing.assert_close(runs["functional-compiled"](), runs["functional"](), rtol=1e-4, atol=1e-5)
        compile_note = f"torch.compile of the support step: {time.perf_counter() - start:.1f} s to compile and run once"
    else:
        del runs["functional-compiled"]
    # the transductive SDK and the bare loops compute the same function: check it before timing
    torch.testing.assert_close(runs["sdk-transductive"](), runs["functional"](), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(runs["l2l-style"](), runs["functional"](), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(runs["functional-plain"](), runs["functional"](), rtol=1e-4, atol=1e-5)
    rounds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            rounds[name].append(median_seconds(fn, repeats=args.repeats, warmup=3))
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    base = medians["functional"]
    lines = [
        f"# MAML adaptation ({STEPS} steps, 5-way 1-shot) + predict of {N_WAY * QUERIES} queries, Conv4 28x28\n",
        f"device: {device_name()}; torch {torch.__version__}; {args.rounds} interleaved rounds of "
        f"{args.repeats} runs, median of the round medians\n",
        "| implementation | median ms | vs functional | vs l2l-style | vs functional-plain | vs l2l-style-plain |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, seconds in medians.items():
        ratios = " | ".join(
            f"{seconds / medians[other]:.2f}x" for other in ("l2l-style", "functional-plain", "l2l-style-plain")
        )
        lines.append(f"| {name} | {1e3 * seconds:.2f} | {seconds / base:.2f}x | {ratios} |")
    flags = " --compile" if args.compile else ""
    lines += ["", *([compile_note, ""] if compile_note else [])]
    lines += [
        f"command: `python benchmarks/speed/maml_adapt.py --rounds {args.rounds} --repeats {args.repeats}{flags}`"
    ]
    text = "\n".join(lines)
    report(text, args.out)


if __name__ == "__main__":
    main()
