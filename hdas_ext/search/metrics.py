"""What the search loop averages and scores: running means and top-k accuracy."""
import torch


class AverageMeter:
    """Running (weighted) average."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, value, n=1):
        if isinstance(value, torch.Tensor):
            value = value.item()
        self.sum += float(value) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent (DARTS convention), one float per k. A k larger than the number
    of classes is clipped to it (top-5 of a 3-class problem is 100 %)."""
    if output.dim() != 2:
        raise ValueError(f"accuracy: output must be [batch, classes], got shape {tuple(output.shape)}")
    if target.shape != output.shape[:1]:
        raise ValueError(f"accuracy: target must have shape [{output.shape[0]}], got {tuple(target.shape)}")
    maxk = min(max(topk), output.size(1))
    batch = target.size(0)
    _, pred = output.topk(maxk, dim=1, largest=True, sorted=True)
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).float().sum().item() * 100.0 / batch for k in topk]
