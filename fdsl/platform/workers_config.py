"""Ray resources of a training run, shared by pre-training, fine-tuning and SSL configs.

Each of those runs is a Ray Train `TorchTrainer` (num_workers workers, each reserving
cpus_per_worker CPUs and, with use_gpu, one GPU) fed by Ray Data augmentation tasks (augment_cpus
CPUs each). `fdsl.platform.pretrain.connect_checked` refuses a local Ray too small for them.
"""

from __future__ import annotations

import dataclasses

from fdsl.config import Config


@dataclasses.dataclass
class WorkersConfig(Config):
    """Ray Train workers and Ray Data augmentation tasks of one training run."""

    num_workers: int = 1
    """Ray Train workers (one per GPU with use_gpu)."""
    use_gpu: bool = False
    """One GPU per worker (NCCL); false: CPU workers (gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs each training worker reserves in Ray (leave some for the augmentation tasks)."""
    threads_per_worker: int = 0
    """torch intra-op threads per worker; 0 keeps Ray's default (the worker's CPUs, at least 1)."""
    augment_cpus: float = 1.0
    """CPUs each Ray Data augmentation task reserves (decoding and augmentation run as Ray tasks)."""

    def validate(self) -> None:
        super().validate()
        self._check_range("num_workers", 1, 100_000)
        self._check_range("cpus_per_worker", 0.01, 1024)
        self._check_range("threads_per_worker", 0, 1024)
        self._check_range("augment_cpus", 0.01, 1024)

    def cpus_needed(self) -> float:
        """CPUs the run reserves at once: its workers and one augmentation task."""
        return self.num_workers * self.cpus_per_worker + self.augment_cpus

    def scaling_config(self):
        """Ray Train's ScalingConfig of the run: num_workers, each with its CPUs (and one GPU)."""
        from ray.train import ScalingConfig

        resources = {"CPU": self.cpus_per_worker} | ({"GPU": 1} if self.use_gpu else {})
        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu,
                             resources_per_worker=resources)

    def worker_device(self):
        """Inside a Train worker: apply threads_per_worker; this worker's torch device (made current
        with use_gpu)."""
        import ray.train.torch
        import torch

        if self.threads_per_worker:
            torch.set_num_threads(self.threads_per_worker)
        device = ray.train.torch.get_device()
        if self.use_gpu:
            torch.cuda.set_device(device)
        return device
