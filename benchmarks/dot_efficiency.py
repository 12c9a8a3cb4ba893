"""How fast are the model's pair-sized matrix products on this machine? (the floor under small-molecule speed)

    .venv/bin/python benchmarks/dot_efficiency.py

Times a chain of 40 dependent (P, F) x (F, F) products (with a tanh between them, so XLA cannot fuse them
away) inside one compiled function, for the row counts of ethanol (36 stored pairs), aspirin (147) and the
buckyball catcher (2331), F = 132 (the model) and 128, under three XLA:CPU dot back ends. Prints the median
time per product and the achieved GFLOP/s.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

BACKENDS = {
    "xla (library default)": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "ynnpack (xla default)": {},
    "onednn": {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_use_onednn": True},
}
CHAIN = 40


def _median_seconds(fn, *args, repeats: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> int:
    key = jax.random.PRNGKey(0)

    def chain(x, weights):
        for k in range(CHAIN):
            x = jnp.tanh(x @ weights[k])
        return x

    print(f"{'backend':24s} {'rows':>5s} {'F':>4s} {'us/dot':>8s} {'GFLOP/s':>8s}")
    for name, options in BACKENDS.items():
        for rows, width in [(36, 132), (36, 128), (147, 132), (147, 128), (2331, 132)]:
            x = jax.random.normal(key, (rows, width))
            weights = jax.random.normal(key, (CHAIN, width, width)) / np.sqrt(width)
            seconds = _median_seconds(jax.jit(chain, compiler_options=options), x, weights) / CHAIN
            print(f"{name:24s} {rows:5d} {width:4d} {seconds * 1e6:8.1f} {2 * rows * width**2 / seconds / 1e9:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
