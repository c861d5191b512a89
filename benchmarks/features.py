"""Per-example white-box features: fedsim vs a per-example backward loop vs Opacus.

    python benchmarks/features.py [--repeats 5] [--nets fcn alexnet_cifar]

For each net (the Purchase-size fcn 600-1024-512-256-128-100 and the CIFAR AlexNet) and each
layer choice (all layers, last layer), batch 256: the median wall time of fedsim's extraction,
of a loop with one backward pass per example, and of Opacus' GradSampleModule, each computing
per-example losses, the chosen layers' gradients and the exact total gradient norm (fedsim
holds a gradient factored where that is smaller: a linear layer's (a, g), a convolution's
unfolded input and output gradient, as the attack reads them; the loop and Opacus materialise
every one). Each
method runs in a subprocess of its own so its peak memory (max RSS) is its own. Prints one
`BENCH` line per case (ratio = fedsim time / loop time) and a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

NETS = {"fcn": ((600,), 100, {"hidden": [1024, 512, 256, 128]}), "alexnet_cifar": ((3, 32, 32), 100, {})}
BATCH = 256


def _setup(net: str):
    from fedsim.learning.models import build_model

    shape, classes, args = NETS[net]
    torch.manual_seed(0)
    model = build_model(net, shape, classes, args).eval()
    return model, torch.randn(BATCH, *shape), torch.randint(0, classes, (BATCH,))


def _layer_names(model: nn.Module, layers: str) -> list[str]:
    from attackers.inference.features import resolve_layers

    return resolve_layers(model, layers)


def run_fedsim(model, x, y, layers):
    from attackers.inference.features import extract

    features = extract(model, x, y, layers)
    return features.gradient_norm


def run_loop(model, x, y, layers):
    modules = dict(model.named_modules())
    chosen = _layer_names(model, layers)
    norms = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        _ = [modules[name].weight.grad.clone() for name in chosen]
        norms.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters())))
    return torch.stack(norms)


def run_opacus(model, x, y, layers):
    from opacus import GradSampleModule

    wrapped = GradSampleModule(model.train(), loss_reduction="sum")  # Opacus captures only in training mode (no dropout or batch norm here)
    wrapped.zero_grad()
    nn.functional.cross_entropy(wrapped(x), y, reduction="sum").backward()
    norms = torch.sqrt(sum(p.grad_sample.flatten(1).pow(2).sum(1) for p in wrapped.parameters()))
    wrapped._close()
    model.eval()
    return norms


METHODS = {"fedsim": run_fedsim, "loop": run_loop, "opacus": run_opacus}


def measure_one(method: str, net: str, layers: str, repeats: int) -> dict:
    """Runs in its own process: median time, peak RSS, and the norms for comparison."""
    torch.set_num_threads(2)
    model, x, y = _setup(net)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, norms = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        norms = METHODS[method](model, x, y, layers)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times), "peak_mb": peak / 1024, "extra_mb": (peak - baseline) / 1024,
            "norms": norms.detach().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=list(NETS))
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "NET", "LAYERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one, args.repeats)))
        return
    rows = []
    for net in args.nets:
        for layers in ("all", "last"):
            results = {}
            for method in METHODS:
                repeats = args.repeats if method != "loop" else max(1, args.repeats // 2)
                out = subprocess.run([sys.executable, __file__, "--one", method, net, layers, "--repeats", str(repeats)],
                                     capture_output=True, text=True, check=True)
                results[method] = json.loads(out.stdout.strip().splitlines()[-1])
            reference = torch.tensor(results["loop"]["norms"])
            difference = {m: float(((torch.tensor(r["norms"]) - reference).abs() / reference.abs().clamp_min(1e-12)).max())
                          for m, r in results.items()}
            ratio = results["fedsim"]["seconds"] / results["loop"]["seconds"]
            vs_opacus = results["fedsim"]["seconds"] / results["opacus"]["seconds"]
            name = f"features_{net}_{layers}"
            print(f"BENCH {name} ref=per-example-loop ratio={ratio:.4f} opacus_ratio={vs_opacus:.3f} "
                  f"fedsim_s={results['fedsim']['seconds']:.4f} loop_s={results['loop']['seconds']:.3f} opacus_s={results['opacus']['seconds']:.4f} "
                  f"fedsim_peak_mb={results['fedsim']['peak_mb']:.0f} loop_peak_mb={results['loop']['peak_mb']:.0f} "
                  f"opacus_peak_mb={results['opacus']['peak_mb']:.0f} max_rel_diff_fedsim={difference['fedsim']:.2e} "
                  f"max_rel_diff_opacus={difference['opacus']:.2e}", flush=True)
            rows.append((name, results, ratio, vs_opacus))
    print()
    print(f"{'case':<28}{'fedsim s':>10}{'loop s':>10}{'opacus s':>10}{'speed-up':>10}{'vs opacus':>11}{'peak MB (f/l/o)':>20}")
    for name, r, ratio, vs_opacus in rows:
        peaks = "/".join(f"{r[m]['peak_mb']:.0f}" for m in METHODS)
        print(f"{name:<28}{r['fedsim']['seconds']:>10.4f}{r['loop']['seconds']:>10.3f}{r['opacus']['seconds']:>10.4f}"
              f"{1 / ratio:>9.1f}x{1 / vs_opacus:>10.1f}x{peaks:>20}")


if __name__ == "__main__":
    main()
