"""so3krates_lab.memory.tune_malloc: the settings apply once, can be refused, and stop the per-call page faults.

Each case runs in a fresh interpreter: the settings are process-wide and must be made before JAX starts.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt settings exist only in glibc")

# A jitted gradient of gather -> tanh -> segment_sum on 40,000 pairs x 128 features: the model's pattern, with
# temporary buffers of tens of MB. Prints minor page faults per call after warm-up.
_FAULTS = """
import json, resource, sys
if sys.argv[1] == "tuned":
    from so3krates_lab.memory import tune_malloc
    tune_malloc()
import jax, jax.numpy as jnp, numpy as np
n, p = 2000, 40000
idx = jnp.asarray(np.random.default_rng(0).integers(0, n, (2, p)), jnp.int32)
def energy(x):
    m = jnp.tanh(x[idx[0]] * x[idx[1]])
    return jnp.sum(jax.ops.segment_sum(m, idx[0], num_segments=n) ** 2)
f = jax.jit(jax.grad(energy))
x = jnp.full((n, 128), 0.1, jnp.float32)
for _ in range(20):  # the tuned heap grows in 64 MB steps until it holds a whole call
    f(x).block_until_ready()
windows = []  # minor page faults per call in five windows of four calls: the median is the steady state
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        f(x).block_until_ready()
    windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
print(json.dumps(sorted(windows)[2]))
"""


def _run(code: str, *args: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                         env=None if env is None else {**os.environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_settings_apply_once_and_can_be_refused():
    code = ("import json; from so3krates_lab.memory import tune_malloc, malloc_tuned; "
            "a = tune_malloc(); b = tune_malloc(); print(json.dumps([a, b, malloc_tuned()]))")
    first, second, tuned = json.loads(_run(code, env={"SO3KRATES_TUNE_MALLOC": "1"}))
    assert first == second and tuned is True
    assert first == {"cpu_async_dispatch": False, "mmap_max": 0, "trim_threshold": -1, "top_pad": 64 << 20}
    refused = json.loads(_run(code, env={"SO3KRATES_TUNE_MALLOC": "0"}))
    assert refused == [{}, {}, False]


def test_late_call_warns():
    code = ("import warnings, jax.numpy as jnp; jnp.ones(2).block_until_ready(); "
            "from so3krates_lab.memory import tune_malloc\n"
            "with warnings.catch_warnings(record=True) as w:\n    warnings.simplefilter('always'); tune_malloc()\n"
            "print(any('after JAX started' in str(x.message) for x in w))")
    assert _run(code, env={"SO3KRATES_TUNE_MALLOC": "1"}) == "True"


def test_tuned_malloc_stops_the_per_call_page_faults():
    default = json.loads(_run(_FAULTS, "default"))
    if default < 1000:
        pytest.skip(f"glibc's default settings fault only {default:.0f} times per call here: nothing to stop")
    # In one CI run (2026-12-07; not reproduced on the development machines, loaded or not)
    # a tuned process kept faulting one 20 MB buffer per call, most likely one that an XLA worker thread allocated:
    # its own arena unmaps it again (memory.py says so). A second fresh process tells that from a lost setting.
    tries = []
    for _ in range(2):
        tries.append(json.loads(_run(_FAULTS, "tuned")))
        if tries[-1] <= 0.01 * default:
            break
    assert min(tries) <= 0.01 * default, f"tuned {tries} vs default {default:.0f} minor page faults per call"


# md.simulate is one of the entry points that call memory.ensure_tuned(); a 3-atom Morse molecule keeps it cheap.
_ENTRY = """
import json, sys, warnings
import so3krates_lab as sl
from so3krates_lab.memory import ensure_tuned, malloc_tuned
import jax
if sys.argv[1] == "jax-first":
    import jax.numpy as jnp
    jnp.ones(2).block_until_ready()  # JAX has started: too late for the dispatch setting
before = malloc_tuned()
system = sl.System(numbers=[6, 1, 8], positions=[[0, 0, 0], [1.4, 0, 0], [0, 1.5, 0.2]])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sim = sl.md.simulate(sl.MorsePotential(), system, sl.md.NVE(0.5), temperature_K=100.0, chunk_steps=10,
                         record_every=5)
    sim.run(10, progress=False)
    again = ensure_tuned()
print(json.dumps([before, malloc_tuned(), again, bool(jax.config.values["jax_cpu_enable_async_dispatch"]),
                  [str(w.message) for w in caught]]))
"""


def test_entry_points_tune_before_jax_starts_and_leave_a_started_jax_alone():
    before, tuned, again, async_dispatch, warned = json.loads(_run(_ENTRY, "fresh",
                                                                   env={"SO3KRATES_TUNE_MALLOC": "1"}))
    assert (before, tuned, again, async_dispatch, warned) == (False, True, True, False, [])
    # JAX ran before the entry point: the settings cannot take full effect, so ensure_tuned leaves them alone
    # and says nothing (tune_malloc itself warns, see test_late_call_warns)
    before, tuned, again, async_dispatch, warned = json.loads(_run(_ENTRY, "jax-first",
                                                                   env={"SO3KRATES_TUNE_MALLOC": "1"}))
    assert (before, tuned, again, async_dispatch) == (False, False, False, True)
    assert not any("tune_malloc" in w for w in warned), warned
    # refused by the environment: nothing is applied
    code = ("import json; from so3krates_lab.memory import ensure_tuned, malloc_tuned; "
            "print(json.dumps([ensure_tuned(), malloc_tuned()]))")
    assert json.loads(_run(code, env={"SO3KRATES_TUNE_MALLOC": "0"})) == [False, False]
