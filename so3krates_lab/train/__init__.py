"""Training: device-resident data, losses, the fit loop, checkpoints."""

from .checkpoint import Checkpoint, energy_fn_from_checkpoint, load_checkpoint, restore_opt_state, save_checkpoint
from .device_data import DeviceData, gather_batch, to_device
from .evaluation import error_report, error_table, predict, refit_element_energies
from .fit import FitResult, TrainConfig, default_batch_size, evaluate, fit
from .loss import absolute_errors, energy_force_loss

__all__ = [
    "Checkpoint", "DeviceData", "FitResult", "TrainConfig", "absolute_errors", "default_batch_size",
    "energy_fn_from_checkpoint", "energy_force_loss", "error_report", "error_table", "evaluate", "fit",
    "gather_batch", "load_checkpoint", "predict", "refit_element_energies", "restore_opt_state", "save_checkpoint",
    "to_device",
]
