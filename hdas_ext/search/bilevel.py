"""Bi-level optimisation of a supernet (DARTS; docs/algorithms.md), without the released code's bugs:

- first order: the architecture gradient of the validation loss at the CURRENT weights and
  alphas (the released code used a stale deep copy made at start-up);
- second order: DARTS' unrolled step w' = w - xi (momentum * buf + grad_w L_train + wd * w),
  gradient dalpha L_val(w', alpha) - xi * (g+ - g-) / (2 eps) with g+- = grad_alpha L_train(w +- eps dw', alpha),
  eps = 0.01 / ||dw'|| (the released code multiplied by eps/2 instead of dividing by 2 eps).

Every gradient is averaged over the micro-batches ("chunks") of a step and then across DDP ranks,
so 2 ranks x 1 chunk and 1 rank x 2 chunks compute the same update from the same samples (the
same images, too, without augmentation: each rank draws its own). Weight steps go through the
DDP wrapper (if any); architecture gradients are taken on the bare net with autograd.grad, so
they never trigger DDP's reducer, and are averaged across ranks by hand.
"""
import contextlib

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..runtime import all_reduce_mean_
from .losses import DEFAULT_MODE, LossMode, auxiliary_loss


def _detach(tree):
    if isinstance(tree, (list, tuple)):
        return type(tree)(_detach(t) for t in tree)
    return None if tree is None else tree.detach()


class BilevelOptimizer:
    def __init__(self, model, w_optimizer, a_optimizer, *, order=1, grad_clip=5.0, delta=0.0, gamma=0.0,
                 loss_mode=DEFAULT_MODE, ddp_net=None, amp_dtype=None, w_scaler=None, a_scaler=None,
                 criterion=F.cross_entropy, fd_radius=0.01):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        if order == 2 and (w_scaler is not None or a_scaler is not None):
            raise ValueError("second order does not support fp16 loss scaling; use amp='bf16' or none")
        loss_mode = LossMode(loss_mode)
        self.model, self.w_optimizer, self.a_optimizer = model, w_optimizer, a_optimizer
        self.order, self.grad_clip = order, grad_clip
        self.delta, self.gamma, self.loss_mode = delta, gamma, loss_mode
        self.ddp_net = ddp_net
        self.amp_dtype = amp_dtype
        self.w_scaler, self.a_scaler = w_scaler, a_scaler
        self.criterion = criterion
        self.fd_radius = fd_radius  # DARTS: eps = 0.01 / ||dw'||

    # ---- helpers -------------------------------------------------------------------------
    def _autocast(self, x):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=self.amp_dtype)

    def _loss(self, x, y, params=None, arch_weights=None, net=None):
        """Cross-entropy of the supernet on (x, y); `params` substitutes the net's weights
        (functional call with cloned buffers, so BN running statistics are left alone)."""
        net = self.model.net if net is None else net
        aw = self.model.arch_weights() if arch_weights is None else arch_weights
        with self._autocast(x):
            if params is None:
                logits = net(x, *aw)
            else:
                state = dict(params)
                state.update({n: b.clone() for n, b in self.model.net.named_buffers()})
                logits = functional_call(self.model.net, state, (x, *aw))
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()  # the loss in float32 under autocast
            loss = self.criterion(logits, y)
        return loss, logits

    def _mean_grads(self, loss_fn, wrt, chunks, scaler=None):
        """Gradients of loss_fn(x, y) w.r.t. `wrt`, averaged over chunks and ranks.
        Returns (grads, mean loss, logits list)."""
        acc, total, logits_all = None, 0.0, []
        for x, y in chunks:
            loss, logits = loss_fn(x, y)
            scaled = scaler.scale(loss) if scaler is not None else loss
            grads = torch.autograd.grad(scaled, wrt, allow_unused=True)
            grads = [torch.zeros_like(w) if g is None else g for w, g in zip(wrt, grads)]
            acc = grads if acc is None else [a + g for a, g in zip(acc, grads)]
            total += loss.item()
            logits_all.append(logits.detach())
        acc = [a / len(chunks) for a in acc]
        all_reduce_mean_(acc)
        return acc, total / len(chunks), logits_all

    # ---- architecture step ---------------------------------------------------------------
    def arch_gradients(self, train_chunks, val_chunks, lr):
        """The architecture gradient of the validation loss (first or second order), averaged
        over chunks and ranks, without the auxiliary losses. Returns (grads, val loss, logits)."""
        alphas = self.model.alphas()
        if self.order == 1:
            return self._mean_grads(lambda x, y: self._loss(x, y), alphas, val_chunks, self.a_scaler)
        return self._unrolled_gradients(train_chunks, val_chunks, lr)

    def _unrolled_gradients(self, train_chunks, val_chunks, lr):
        named = [(n, p) for n, p in self.model.net.named_parameters()]
        names, weights = [n for n, _ in named], [p for _, p in named]
        alphas = self.model.alphas()
        group = self.w_optimizer.param_groups[0]
        momentum, wd = group.get("momentum", 0.0), group.get("weight_decay", 0.0)
        fixed_aw = _detach(self.model.arch_weights())
        live = dict(named)
        g_w, _, _ = self._mean_grads(lambda x, y: self._loss(x, y, params=live, arch_weights=fixed_aw),
                                     weights, train_chunks)
        with torch.no_grad():
            unrolled = []
            for w, g in zip(weights, g_w):
                buf = self.w_optimizer.state.get(w, {}).get("momentum_buffer")
                step = g + wd * w
                if buf is not None:
                    step = step + momentum * buf
                unrolled.append((w - lr * step).detach().requires_grad_(True))
        unrolled_params = dict(zip(names, unrolled))
        grads, val_loss, logits = self._mean_grads(
            lambda x, y: self._loss(x, y, params=unrolled_params), alphas + unrolled, val_chunks)
        d_alpha, d_w = grads[:len(alphas)], grads[len(alphas):]
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in d_w))
        if norm == 0:
            return d_alpha, val_loss, logits
        eps = self.fd_radius / norm.item()
        with torch.no_grad():
            w_plus = dict(zip(names, [w + eps * d for w, d in zip(weights, d_w)]))
            w_minus = dict(zip(names, [w - eps * d for w, d in zip(weights, d_w)]))
        g_plus, _, _ = self._mean_grads(lambda x, y: self._loss(x, y, params=w_plus), alphas, train_chunks)
        g_minus, _, _ = self._mean_grads(lambda x, y: self._loss(x, y, params=w_minus), alphas, train_chunks)
        hessian = [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]
        return [da - lr * h for da, h in zip(d_alpha, hessian)], val_loss, logits

    def arch_step(self, train_chunks, val_chunks, lr):
        alphas = self.model.alphas()
        grads, val_loss, logits = self.arch_gradients(train_chunks, val_chunks, lr)
        stats = {"val_loss": val_loss}
        if self.loss_mode.in_objective:
            aux, parts = auxiliary_loss(self.model, self.delta, self.gamma, self.loss_mode)
            if aux is not None:
                scale = self.a_scaler.get_scale() if self.a_scaler is not None else 1.0
                aux_grads = torch.autograd.grad(aux * scale, alphas, allow_unused=True)
                grads = [g if a is None else g + a for g, a in zip(grads, aux_grads)]
                stats.update({f"{k}_loss": v for k, v in parts.items()})
        self.a_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(alphas, grads):
            p.grad = g
        if self.a_scaler is not None:
            self.a_scaler.step(self.a_optimizer)
            self.a_scaler.update()
        else:
            self.a_optimizer.step()
        if not self.loss_mode.in_objective:
            # The released code: a second Adam step on the auxiliary loss alone (docs/algorithms.md).
            aux, parts = auxiliary_loss(self.model, self.delta, self.gamma, self.loss_mode)
            if aux is not None:
                self.a_optimizer.zero_grad(set_to_none=True)
                aux.backward()
                self.a_optimizer.step()
                stats.update({f"{k}_loss": v for k, v in parts.items()})
        return stats, logits

    # ---- weight step ---------------------------------------------------------------------
    def weight_step(self, train_chunks):
        net = self.ddp_net if self.ddp_net is not None else self.model.net
        aw = _detach(self.model.arch_weights())
        self.w_optimizer.zero_grad(set_to_none=True)
        total, logits_all = 0.0, []
        for i, (x, y) in enumerate(train_chunks):
            sync = self.ddp_net is None or i == len(train_chunks) - 1
            with (contextlib.nullcontext() if sync else self.ddp_net.no_sync()):
                loss, logits = self._loss(x, y, arch_weights=aw, net=net)
                scaled = loss / len(train_chunks)
                (self.w_scaler.scale(scaled) if self.w_scaler is not None else scaled).backward()
            total += loss.item()
            logits_all.append(logits.detach())
        if self.w_scaler is not None:
            self.w_scaler.unscale_(self.w_optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.weights(), self.grad_clip)
        if self.w_scaler is not None:
            self.w_scaler.step(self.w_optimizer)
            self.w_scaler.update()
        else:
            self.w_optimizer.step()
        return total / len(train_chunks), logits_all

    def step(self, train_chunks, val_chunks, lr, update_arch=True):
        """One search step: architecture step on the validation chunks (unless warming up),
        then the weight step on the training chunks. Returns a stats dict and the logits."""
        stats, val_logits = {}, None
        if update_arch:
            stats, val_logits = self.arch_step(train_chunks, val_chunks, lr)
        stats["train_loss"], train_logits = self.weight_step(train_chunks)
        return stats, train_logits, val_logits
