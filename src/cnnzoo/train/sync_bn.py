"""BatchNorm over the global batch under DDP (`--sync-bn`): N processes normalise like one.

Under DDP each rank's BatchNorm computes its batch mean and variance over its own batch/N
images, so N ranks train a different function from one process with the whole batch (and
with a small per-rank batch, a noisier one). `convert` replaces every BatchNorm layer by one
whose statistics are summed over all ranks first.

On CUDA that is `torch.nn.SyncBatchNorm`. On the CPU, torch (2.13 included) refuses it
("SyncBatchNorm expected input tensor to be on GPU or XPU"), so gloo runs use
`SyncBatchNorm` below: one all_reduce of the per-channel sum, sum of squares and count (in
float64, so E[x^2] - E[x]^2 does not cancel), and autograd through the all_reduce, whose
backward all-reduces the gradients of those sums. Each rank then gets the gradient of the
global loss, as torch's SyncBatchNorm computes it.

Both keep the parameters, buffers and state-dict keys of the layers they replace: the
optimizer and checkpoints see no difference, and outside training (eval mode, or no process
group) they are plain BatchNorm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of the sum is summed over ranks too."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm(_BatchNorm):
    """BatchNorm with batch statistics over all ranks; for CPU (gloo) process groups."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.size(1)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims, dtype=torch.float64),
                           xf.square().sum(dims, dtype=torch.float64),
                           torch.tensor([x.numel() // c], dtype=torch.float64, device=x.device)])
        total = _AllReduceSum.apply(local)
        n = total[2 * c].detach()
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"input size {list(x.shape)} on each rank")
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean.square()  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * (n / (n - 1)))
        shape = [1, c] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        y = (xf - mean.float().view(shape)) * scale.float().view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """As BatchNorm does: momentum, or a cumulative average when momentum is None."""
        self.num_batches_tracked.add_(1)
        factor = (self.momentum if self.momentum is not None
                  else 1.0 / float(self.num_batches_tracked))
        dtype = self.running_mean.dtype
        self.running_mean.mul_(1 - factor).add_(mean.to(dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var.to(dtype), alpha=factor)


def convert(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with every BatchNorm layer synchronised over the ranks (in place where the
    layers are children; the returned module is the one to use)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_cpu(model)


def _convert_cpu(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, (SyncBatchNorm,
                                                                  nn.SyncBatchNorm)):
        synced = SyncBatchNorm(module.num_features, module.eps, module.momentum,
                               module.affine, module.track_running_stats)
        # The same Parameter and buffer objects: the optimizer's references stay valid.
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _convert_cpu(child))
    return module
