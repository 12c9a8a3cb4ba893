"""Training: device-resident data, losses, the fit loop, evaluation. Checkpoints live in `so3krates_lab.model`."""

from .device_data import DeviceData, gather_batch, to_device
from .evaluation import error_report, error_table, predict, refit_element_energies
from .fit import FitResult, TrainConfig, default_batch_size, evaluate, fit
from .loss import absolute_errors, energy_force_loss

__all__ = [
    "DeviceData", "FitResult", "TrainConfig", "absolute_errors", "default_batch_size", "energy_force_loss",
    "error_report", "error_table", "evaluate", "fit", "gather_batch", "predict", "refit_element_energies",
    "to_device",
]
