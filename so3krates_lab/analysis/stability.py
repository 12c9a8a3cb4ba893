"""Stability and energy conservation of MD runs, from `Trajectory`s: what notebooks and benchmarks report.

    energy_conservation(traj)          # total-energy fluctuation and drift of an NVE run
    stable_times_ps(traj, duration_fs) # per replica: how long each ran before a watchdog stopped it
"""

from __future__ import annotations

import numpy as np

from ..structures import Trajectory


def energy_conservation(trajectory: Trajectory) -> dict:
    """Total energy (potential + kinetic, or the integrator's conserved quantity) of a one-structure run.

    Returns {"frames", "duration_ps", "std_meV", "drift_meV_per_ps" (slope of a least-squares line),
    "drift_meV_per_atom_ps", "max_deviation_meV" (largest abs(E(t) - E(0)))}. Needs at least two frames.
    Warns (UserWarning) for a Langevin run (`trajectory.integrator`): its energy flows to and from the bath, so
    the figures measure that exchange, not the integration (NVE and Nose-Hoover conserve theirs).

    A 2-atom run whose conserved energy climbs by 1 meV every 0.5 ps:

    >>> import numpy as np
    >>> from so3krates_lab.structures import Trajectory
    >>> k = 5
    >>> traj = Trajectory(numbers=np.array([1, 1]), time_fs=500.0 * np.arange(k), positions=np.zeros((k, 2, 3)),
    ...                   velocities=np.zeros((k, 2, 3)), potential=np.zeros(k), kinetic=np.zeros(k),
    ...                   temperature=np.zeros(k), conserved=-31.0 + 1e-3 * np.arange(k))
    >>> report = energy_conservation(traj)
    >>> report["duration_ps"], round(report["drift_meV_per_ps"], 6), round(report["drift_meV_per_atom_ps"], 6)
    (2.0, 2.0, 1.0)
    >>> round(report["max_deviation_meV"], 6)
    4.0
    """
    if trajectory.n_replicas is not None:
        raise ValueError("energy_conservation takes one structure: use trajectory.replica(r)")
    if len(trajectory) < 2:
        raise ValueError(f"energy_conservation needs at least two frames, got {len(trajectory)}")
    if (trajectory.integrator or "").startswith("Langevin"):
        import warnings

        warnings.warn(f"energy_conservation of a {trajectory.integrator} run: a Langevin thermostat exchanges "
                      "energy with its bath, so the drift and noise are not errors of the integration; measure "
                      "them on an NVE run", UserWarning, stacklevel=2)
    t_ps = trajectory.time_fs / 1e3
    total = trajectory.conserved
    slope = float(np.polyfit(t_ps - t_ps[0], total, 1)[0])
    return {"frames": len(trajectory), "duration_ps": float(t_ps[-1] - t_ps[0]),
            "std_meV": float(1e3 * np.std(total)), "drift_meV_per_ps": 1e3 * slope,
            "drift_meV_per_atom_ps": 1e3 * slope / trajectory.n_atoms,
            "max_deviation_meV": float(1e3 * np.max(np.abs(total - total[0])))}


def stable_times_ps(trajectory: Trajectory, duration_fs: float | None = None) -> np.ndarray:
    """(R,) ps each replica ran before its watchdog stopped it; replicas that never stopped get the run's length
    (`duration_fs`, default the last frame's time). A one-structure trajectory gives one value.

    A run that was never stopped lasted its whole length:

    >>> import numpy as np
    >>> from so3krates_lab.structures import Trajectory
    >>> traj = Trajectory(numbers=np.array([1]), time_fs=np.array([0.0, 1500.0]), positions=np.zeros((2, 1, 3)),
    ...                   velocities=np.zeros((2, 1, 3)), potential=np.zeros(2), kinetic=np.zeros(2),
    ...                   temperature=np.zeros(2), conserved=np.zeros(2))
    >>> stable_times_ps(traj).tolist(), stable_times_ps(traj, duration_fs=2000.0).tolist()
    ([1.5], [2.0])
    """
    end = float(trajectory.time_fs[-1]) if duration_fs is None and len(trajectory) else float(duration_fs or 0.0)
    if trajectory.n_replicas is None:
        stopped = trajectory.stop_reason is not None and trajectory.stop_reason != "stopped on request"
        last = float(trajectory.time_fs[-1]) if len(trajectory) else 0.0
        return np.array([(last if stopped else end) / 1e3])
    stop = np.asarray(trajectory.stop_time_fs if trajectory.stop_time_fs is not None
                      else np.full(trajectory.n_replicas, np.inf), float)
    return np.where(np.isfinite(stop), stop, end) / 1e3


__all__ = ["energy_conservation", "stable_times_ps"]
