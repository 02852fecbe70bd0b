"""Benchmark: the gate's statistics on a large test set against a per-replicate scikit-learn loop.

    .venv/bin/python bench/bench_gate.py [--rows 1000000] [--replicates 1000] [--loop-replicates 5] [--rounds 2]

Synthetic test set (same for every method, seeded): ``--rows`` rows, 10% positives, two models
whose probabilities share a signal and differ by their own noise (the challenger a little less
noisy), and sampling weights as Refit's sampler gives them (negatives down-sampled 1 in 4, so
weight 4; positives kept, weight 1).

``gate``
    what the gate runs (``gate.paired_tests`` for comparisons of these four metrics):
    ``delong_paired`` (ROC AUC) and one ``paired_bootstrap_many`` over log loss,
    Brier score and PR AUC with ``--replicates`` paired Poisson replicates (all three metrics
    share the replicates).
``loop``
    the straightforward way: per replicate draw ``Generator.poisson(1, n)`` weights and call
    scikit-learn's ``log_loss``, ``brier_score_loss`` and ``average_precision_score`` with
    ``sample_weight`` for both models. It is slow, so it runs ``--loop-replicates`` replicates and
    its time is extrapolated linearly to ``--replicates`` (each replicate costs the same); the
    output says so. It also checks, untimed, that the vectorised bootstrap's replicate values
    equal scikit-learn's on the same replicate weights.

Every method runs in a fresh process (its peak RSS, ``VmHWM``, is its own); methods alternate
over ``--rounds`` rounds and the best round counts. Goals: the vectorised gate in at most 10 s
and at least 50x faster than the loop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METRICS = ("log_loss", "brier", "pr_auc")


def make_data(rows: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.10).astype(np.int8)
    signal = 1.3 * y + rng.normal(size=rows) - 2.6
    p_a = 1.0 / (1.0 + np.exp(-(signal + 0.60 * rng.normal(size=rows))))
    p_b = 1.0 / (1.0 + np.exp(-(signal + 0.65 * rng.normal(size=rows))))
    weights = np.where(y == 1, 1.0, 4.0)
    return y, p_a, p_b, weights


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


def run_gate(rows: int, replicates: int) -> dict:
    from ml_tasks.evaluation.statistics import delong_paired, paired_bootstrap_many

    y, p_a, p_b, w = make_data(rows)
    start_rss, _ = rss_mib()
    t0 = time.perf_counter()
    delong = delong_paired(y, p_a, p_b, weights=w)
    t1 = time.perf_counter()
    boot = paired_bootstrap_many(list(METRICS), y, p_a, p_b, w, replicates=replicates, seed=0)
    t2 = time.perf_counter()
    _, peak = rss_mib()
    return {
        "seconds": t2 - t0, "delong_s": t1 - t0, "bootstrap_s": t2 - t1, "rss_start": start_rss, "rss_peak": peak,
        "delong": f"AUC {delong.auc_a:.4f} vs {delong.auc_b:.4f}, diff {delong.difference:+.5f} "
                  f"(SE {delong.se:.5f}, z {delong.z:.1f})",
        "metrics": {m: f"improvement {r.improvement:+.5f}, 95% CI [{r.ci_low:+.5f}, {r.ci_high:+.5f}], "
                       f"p(superior) {r.p_superiority:.4f}" for m, r in boot.items()},
    }


def run_loop(rows: int, replicates: int, loop_replicates: int) -> dict:
    import numpy as np
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss

    from ml_tasks.evaluation.metrics import EPS
    from ml_tasks.evaluation.statistics import paired_bootstrap_many, poisson_replicate_counts

    y, p_a, p_b, w = make_data(rows)
    a, b = np.clip(p_a, EPS, 1 - EPS), np.clip(p_b, EPS, 1 - EPS)
    scorers = {
        "log_loss": lambda p, sw: log_loss(y, p, sample_weight=sw, labels=[0, 1]),
        "brier": lambda p, sw: brier_score_loss(y, p, sample_weight=sw),
        "pr_auc": lambda p, sw: average_precision_score(y, p, sample_weight=sw),
    }
    start_rss, _ = rss_mib()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(loop_replicates):
        sw = w * rng.poisson(1.0, size=rows)
        for score in scorers.values():
            score(a, sw) - score(b, sw)
    elapsed = time.perf_counter() - t0
    _, peak = rss_mib()
    # Untimed: the vectorised replicates equal scikit-learn's on the same replicate weights.
    boot = paired_bootstrap_many(list(METRICS), y, p_a, p_b, w, replicates=loop_replicates, seed=0)
    counts = poisson_replicate_counts(p_a, loop_replicates, seed=0)
    worst = 0.0
    for k in range(loop_replicates):
        sw = w * counts[k]
        for metric, score in scorers.items():
            worst = max(worst, abs(boot[metric].replicates_a[k] - score(a, sw)),
                        abs(boot[metric].replicates_b[k] - score(b, sw)))
    return {"seconds": elapsed * replicates / loop_replicates, "measured_s": elapsed, "rss_start": start_rss,
            "rss_peak": peak, "max_abs_diff": worst}


def child(args: argparse.Namespace) -> None:
    if args.method == "gate":
        result = run_gate(args.rows, args.replicates)
    else:
        result = run_loop(args.rows, args.replicates, args.loop_replicates)
    print(json.dumps(result))


def spawn(method: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", method, "--rows", str(args.rows),
               "--replicates", str(args.replicates), "--loop-replicates", str(args.loop_replicates)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--loop-replicates", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", dest="method", choices=["gate", "loop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return

    import numpy as np
    import scipy
    import sklearn

    print(f"{args.rows:,} test rows, {args.replicates:,} paired Poisson replicates, metrics {', '.join(METRICS)} "
          f"(+ DeLong ROC AUC); numpy {np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}")
    runs: dict[str, list[dict]] = {"gate": [], "loop": []}
    for round_ in range(args.rounds):
        for method in ("gate", "loop"):
            result = spawn(method, args)
            runs[method].append(result)
            print(f"  round {round_ + 1} {method:5s} {result['seconds']:8.2f} s"
                  + (" (extrapolated)" if method == "loop" else ""), flush=True)
    gate = min(runs["gate"], key=lambda r: r["seconds"])
    loop = min(runs["loop"], key=lambda r: r["seconds"])

    print()
    print(f"{'method':8s} {'best s':>9s} {'median s':>9s}  {'peak RSS':>9s} {'at start':>9s}  note")
    for method, best in (("gate", gate), ("loop", loop)):
        median = float(np.median([r["seconds"] for r in runs[method]]))
        if method == "gate":
            note = f"DeLong {best['delong_s']:.2f} s + bootstrap {best['bootstrap_s']:.2f} s"
        else:
            note = (f"{args.loop_replicates} replicates measured in {best['measured_s']:.2f} s, "
                    f"x {args.replicates / args.loop_replicates:g} to {args.replicates:,} (extrapolated)")
        memory = f"{best['rss_peak']:6.0f} MiB {best['rss_start']:6.0f} MiB"
        print(f"{method:8s} {best['seconds']:9.2f} {median:9.2f}  {memory}  {note}")
    print()
    print(f"DeLong:   {gate['delong']}")
    for metric, line in gate["metrics"].items():
        print(f"{metric:9s} {line}")
    print(f"check:    vectorised replicates vs scikit-learn on the same weights, max |difference| "
          f"{loop['max_abs_diff']:.1e}")

    ratio = loop["seconds"] / gate["bootstrap_s"]
    ratio_total = loop["seconds"] / gate["seconds"]
    print()
    print("goals (best rounds; the loop is extrapolated from "
          f"{args.loop_replicates} to {args.replicates:,} replicates):")
    print(f"  [{'PASS' if gate['seconds'] <= 10 else 'MISS'}] vectorised gate (DeLong + bootstrap of 3 metrics) "
          f"<= 10 s: {gate['seconds']:.2f} s")
    print(f"  [{'PASS' if ratio >= 50 else 'MISS'}] >= 50x faster than the scikit-learn loop: "
          f"{ratio:.0f}x (bootstrap vs loop; {ratio_total:.0f}x counting DeLong too)")
    print(f"  [info] memory above the data: gate {gate['rss_peak'] - gate['rss_start']:.0f} MiB, "
          f"loop {loop['rss_peak'] - loop['rss_start']:.0f} MiB")


if __name__ == "__main__":
    main()
