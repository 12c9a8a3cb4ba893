"""Several processes as one job, on JAX's own multi-process runtime (`jax.distributed`).

Each process runs the same program on the same inputs; `initialize` connects them (before anything else uses
JAX), after which `jax.devices()` lists the devices of every process and a mesh over them spans the whole job.
What this package does with that:

- `train.fit` splits every global batch over all devices of all processes and sums the gradients across them;
  process 0 alone writes checkpoints and shows progress; every process reads a checkpoint to resume.
- `md.simulate(..., replicas=R, shard_replicas=True)` runs each process's share of the R replicas and writes
  it to its own part of the trajectory store (`md.open_replica_parts` reads the parts back as one run).
- `analysis.hop_minima(..., shard_walkers=True)` quenches each process's share of the walkers and applies every
  process's results on every process, so all hold the same minima database; process 0 writes the checkpoint.

On CPUs the collectives go through Gloo (set here before the runtime starts); on GPUs through NCCL.

    import so3krates_lab as sl
    sl.distributed.initialize("10.0.0.1:12345", num_processes=2, process_id=0)  # on every process, its own id
    # or, under SLURM / Open MPI / Kubernetes, with nothing to pass: sl.distributed.initialize(auto=True)

A single process needs nothing: every function here then answers as for a job of one process.
"""

from __future__ import annotations

__all__ = ["agree_any", "broadcast", "free_local_port", "initialize", "is_main_process", "is_multiprocess",
           "process_count", "process_index", "replica_share", "shutdown", "split_over_local_devices"]

_INITIALIZED = False


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, auto: bool = False, local_device_ids=None, timeout_s: int = 300) -> None:
    """Join this process to a multi-process job (call it first, before any other JAX work, on every process).

    coordinator: "host:port" of process 0 (it listens there; the others connect); num_processes: the job's
    process count; process_id: this process's index, 0 to num_processes - 1. auto=True instead lets JAX read
    them from the cluster scheduler's environment (SLURM, Open MPI, Kubernetes, ...), with the same arguments
    left None. local_device_ids: the local devices this process uses (e.g. one GPU each); None: all.
    timeout_s: how long (s) to wait for the other processes to join before giving up with an error.
    Calling it a second time does nothing.
    """
    global _INITIALIZED
    if _INITIALIZED:
        return
    explicit = (coordinator, num_processes, process_id)
    if not auto and any(v is None for v in explicit):
        raise ValueError("give coordinator ('host:port'), num_processes and process_id, or auto=True to read them "
                         f"from the cluster scheduler; got {explicit}")
    if not auto:
        if int(num_processes) < 1 or not 0 <= int(process_id) < int(num_processes):
            raise ValueError(f"process_id must lie in 0..num_processes - 1, got {process_id} of {num_processes}")
        host, sep, port = str(coordinator).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"coordinator must be 'host:port', got {coordinator!r}")
    import jax

    # CPU devices of different processes talk through Gloo; without it a cross-process collective on CPU fails
    # (GPUs use NCCL whatever this says).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {"initialization_timeout": int(timeout_s)}
    if local_device_ids is not None:
        kwargs["local_device_ids"] = local_device_ids
    if auto:
        jax.distributed.initialize(**kwargs)
    else:
        jax.distributed.initialize(str(coordinator), num_processes=int(num_processes), process_id=int(process_id),
                                   **kwargs)
    _INITIALIZED = True


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: a coordinator port for a job whose processes all run
    on this machine (`initialize(f"127.0.0.1:{port}", ...)`). Another program may take it before process 0
    listens there; a job that fails to connect can simply be started again with a new port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shutdown() -> None:
    """Leave the job (optional: JAX also does this at exit)."""
    global _INITIALIZED
    if _INITIALIZED:
        import jax

        jax.distributed.shutdown()
        _INITIALIZED = False


def process_count() -> int:
    """How many processes the job has (1 without `initialize`)."""
    import jax

    return jax.process_count()


def process_index() -> int:
    """This process's index in the job, 0 to process_count() - 1."""
    import jax

    return jax.process_index()


def is_multiprocess() -> bool:
    """True when this process is one of several."""
    return process_count() > 1


def is_main_process() -> bool:
    """True on process 0: the one that writes shared files and prints progress."""
    return process_index() == 0


def agree_any(flag: bool) -> bool:
    """True on every process when `flag` is True on at least one (a collective: every process must call it at
    the same point). With one process, `flag` itself."""
    if not is_multiprocess():
        return bool(flag)
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)]))))


def broadcast(value):
    """Process 0's `value` (a NumPy array or a tree of them, the same shapes on every process), on every
    process (a collective). With one process, `value` itself."""
    if not is_multiprocess():
        return value
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(value)


def replica_share(n_replicas: int, n_processes: int | None = None, index: int | None = None) -> range:
    """The replicas (global indices) that process `index` of `n_processes` runs: contiguous blocks, as equal as
    the count allows, the first processes taking one more. Defaults: this job's process count and index.

    >>> [list(replica_share(5, 2, i)) for i in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    n = process_count() if n_processes is None else int(n_processes)
    i = process_index() if index is None else int(index)
    if not 0 <= i < n:
        raise ValueError(f"process index {i} outside 0..{n - 1}")
    if n_replicas < n:
        raise ValueError(f"{n_replicas} replicas cannot be shared by {n} processes: give at least one each")
    base, extra = divmod(int(n_replicas), n)
    start = i * base + min(i, extra)
    return range(start, start + base + (1 if i < extra else 0))


def split_over_local_devices(tree, n: int):
    """`tree` with every array whose leading axis has length n (replicas, minimiser slots) split along that axis
    over this process's devices (as many as divide n evenly); compiled code then runs each device's share there.
    With one device (or n prime to the device count) the tree is returned unchanged."""
    import math

    import jax
    import numpy as np

    devices = jax.local_devices()
    k = math.gcd(int(n), len(devices))
    if k < 2:
        return tree
    split = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices[:k]), ("replica",)),
                                       jax.sharding.PartitionSpec("replica"))
    return jax.tree.map(lambda x: jax.device_put(x, split) if getattr(x, "ndim", 0) >= 1 and x.shape[0] == n
                        else x, tree)
