"""The run layer under search and training: the device and distributed set-up and reductions,
mixed precision, seeds and RNG states, the output folder (checkpoints, the JSON-lines log,
config.json, TensorBoard), the resume policy, progress output and the configuration fields both
commands build their options from."""
from .checkpoint import cpu_state, load_checkpoint, save_checkpoint
from .config_fields import config_dict, genotype_text, option
from .distributed import (DistContext, all_reduce_mean_, all_reduce_sum, barrier, broadcast_, check_device,
                          distributed_session, gather_objects, init_distributed, is_main_process)
from .jsonl_log import JsonlLogger
from .precision import AMP_MODES, amp_dtype
from .progress import progress_bar, show_progress
from .resume import ResumePolicy
from .rng import get_rng_state, set_rng_state, set_seed
from .run_folder import CHECKPOINT, CONFIG, LOG, RunFolder
from .sync_batchnorm import CPUSyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "DistContext", "check_device", "init_distributed", "distributed_session", "is_main_process", "all_reduce_sum", "all_reduce_mean_",
    "broadcast_", "gather_objects", "barrier", "CPUSyncBatchNorm", "convert_sync_batchnorm",
    "RunFolder", "CHECKPOINT", "CONFIG", "LOG", "save_checkpoint", "load_checkpoint", "cpu_state", "JsonlLogger",
    "ResumePolicy", "progress_bar", "show_progress", "option", "config_dict", "genotype_text", "AMP_MODES",
    "amp_dtype", "set_seed", "get_rng_state", "set_rng_state",
]
