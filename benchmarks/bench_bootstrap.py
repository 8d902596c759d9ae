"""Speed of the bootstrap intervals of the zero-shot metrics (accuracy, balanced accuracy, macro F1, AUROC).

    python benchmarks/bench_bootstrap.py [--images 1000] [--draws 1000] [--classes 5]

Prints bootstrap_seconds (one set of predictions, goal < 2) and paired_bootstrap_seconds (learned - hand).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cleft_hf.evaluation.bootstrap import bootstrap_intervals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.images)
    hand, learned = (rng.dirichlet(np.ones(args.classes), args.images).astype(np.float32) for _ in range(2))
    start = time.perf_counter()
    bootstrap_intervals(hand, labels, args.draws, seed=0)
    single = time.perf_counter() - start
    start = time.perf_counter()
    bootstrap_intervals(learned, labels, args.draws, seed=0, baseline=hand)
    paired = time.perf_counter() - start
    print(f"images={args.images}\ndraws={args.draws}\nclasses={args.classes}")
    print(f"bootstrap_seconds={single:.3f}\npaired_bootstrap_seconds={paired:.3f}")


if __name__ == "__main__":
    main()
