"""The training loop behind `hdas train`: one process or DDP under torchrun, checkpoint every
epoch, bit-exact resume (same seed, same world size), JSONL + TensorBoard logs."""
import contextlib
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data import DeviceLoader, InMemoryImages, ShardedSampler, get_dataset
from ..networks import build_eval_network, count_params
from ..runtime import (RunFolder, all_reduce_sum, amp_dtype, barrier, convert_sync_batchnorm, cpu_state,
                       distributed_session, gather_objects, get_rng_state, progress_bar, save_checkpoint, set_rng_state,
                       set_seed, show_progress)
from .config import RESUME, TrainConfig, has_aux_head, validate
from .schedule import LRFactor

LAST, BEST = "last.pt", "best.pt"
FORMAT = "hdas_ext.train/1"


def build_model(cfg):
    return build_eval_network(cfg.cell, cfg.stages, dataset=cfg.dataset, init_channels=cfg.init_channels,
                              layers=cfg.layers, auxiliary=has_aux_head(cfg.to_dict()),
                              drop_path_prob=0.0, pool_bn=cfg.pool_bn)


def _dataset(cfg, ctx, train):
    kw = dict(root=cfg.data_root, train=train, augment=train and cfg.augment, cutout=cfg.cutout,
              color_jitter=cfg.color_jitter, autoaugment=train and cfg.autoaugment)
    if cfg.download:
        if ctx.main:
            get_dataset(cfg.dataset, download=True, **kw)
        barrier()
    ds = get_dataset(cfg.dataset, **kw)
    n = cfg.train_subset if train else cfg.test_subset
    if n:
        n = min(n, len(ds))
        ds = ds.subset(n) if isinstance(ds, InMemoryImages) else Subset(ds, range(n))
    return ds


def _loader(ds, cfg, ctx, train):
    sampler = ShardedSampler(len(ds), shuffle=train, seed=cfg.seed, rank=ctx.rank, world=ctx.world)
    # A training batch of one sample would make BatchNorm fail on the aux head's 1x1 map.
    drop_last = train and len(sampler) % cfg.batch_size == 1
    if cfg.data_on_device:
        if not isinstance(ds, InMemoryImages):
            raise ValueError("data_on_device needs an in-memory dataset ('digits' or 'cifar10')")
        return DeviceLoader(ds, cfg.batch_size, sampler, ctx.device, seed=cfg.seed, drop_last=drop_last)
    # Workers are not persistent: each epoch's iterator draws their seeds from the (checkpointed)
    # global RNG, which keeps augmentation reproducible across a resume.
    return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      pin_memory=ctx.device.type == "cuda", drop_last=drop_last)


def _autocast(amp, ctx):
    return contextlib.nullcontext() if amp is None else torch.autocast(ctx.device.type, dtype=amp)


def _batch_stats(logits, y, loss):
    k5 = min(5, logits.size(1))
    top = logits.topk(k5, dim=1).indices
    hit = top.eq(y.view(-1, 1))
    n = y.numel()
    return torch.stack([loss.detach().double() * n, hit[:, :1].any(1).sum().double(),
                        hit.any(1).sum().double(), torch.tensor(float(n), dtype=torch.float64, device=y.device)])


def _steps(loader, limit):
    return min(len(loader), limit) if limit else len(loader)


def _batches(loader, limit, cfg, ctx):
    """(step, x, y) on the device, in the configured memory format, for at most `limit` steps."""
    steps = _steps(loader, limit)
    for step, (x, y) in enumerate(loader):
        if step >= steps:
            break
        x = x.to(ctx.device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield step, x, y.to(ctx.device, non_blocking=True)


def _totals(sums, ctx, prefix):
    loss_sum, c1, c5, n = all_reduce_sum(sums.tolist(), ctx.device)
    return {f"{prefix}_loss": loss_sum / max(n, 1), f"{prefix}_top1": 100 * c1 / max(n, 1),
            f"{prefix}_top5": 100 * c5 / max(n, 1), f"{prefix}_images": int(n)}


def train_epoch(model, fwd, loader, optimizer, scheduler, scaler, cfg, ctx, bar=None, amp=None):
    """One epoch of at most cfg.steps_per_epoch steps; `amp`: the autocast dtype or None."""
    model.train()
    sums = torch.zeros(4, dtype=torch.float64, device=ctx.device)
    params = [p for p in model.parameters() if p.requires_grad]
    for step, x, y in _batches(loader, cfg.steps_per_epoch, cfg, ctx):
        with _autocast(amp, ctx):
            logits, aux = fwd(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if aux is not None and cfg.auxiliary_weight > 0:
                loss = loss + cfg.auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            sums += _batch_stats(logits.float(), y, loss)
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    return _totals(sums, ctx, "train")


@torch.no_grad()
def evaluate(fwd, model, loader, cfg, ctx, max_steps=None, amp=None):
    """Top-1/top-5 (percent) and mean cross-entropy over this rank's shard (at most `max_steps`
    batches), summed over ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=ctx.device)
    for _, x, y in _batches(loader, max_steps, cfg, ctx):
        with _autocast(amp, ctx):
            logits, _ = fwd(x)
        logits = logits.float()
        sums += _batch_stats(logits, y, F.cross_entropy(logits, y))
    return _totals(sums, ctx, "test")


def _network(cfg, ctx):
    """(the network on the device, the forward used in training (DDP-wrapped under torchrun), the
    forward used in evaluation)."""
    raw = build_model(cfg)
    if cfg.sync_bn and ctx.distributed:
        raw = convert_sync_batchnorm(raw, ctx.device)
    raw = raw.to(ctx.device)
    if cfg.channels_last:
        raw = raw.to(memory_format=torch.channels_last)
    model = raw
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            raw, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if cfg.compile:
        return raw, torch.compile(model), torch.compile(raw)
    return raw, model, raw


def _epoch_line(record, epochs):
    test = f" test {record['test_loss']:.3f}/{record['test_top1']:.1f}%" if "test_top1" in record else ""
    return (f"[train] epoch {record['epoch']}/{epochs} lr {record['lr']:.4g} train {record['train_loss']:.3f}/"
            f"{record['train_top1']:.1f}%{test} ({record['epoch_time']:.1f}s)")


def train(cfg, on_epoch_end=None):
    """Train cfg's network; returns a summary dict. `on_epoch_end(epoch, record)` runs after each
    epoch's checkpoint is written (tests use it to interrupt a run)."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train(cfg): cfg must be a TrainConfig (see make_config), got {type(cfg).__name__}")
    cfg = validate(cfg)
    with distributed_session(cfg.device) as ctx:
        amp = amp_dtype(cfg.amp, ctx.device)
        set_seed(cfg.seed + ctx.rank, deterministic=cfg.deterministic)
        if ctx.device.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        folder = RunFolder(cfg.output, ctx.main, tag="train")
        resume_from = folder.checkpoint_to_resume(cfg.resume)
        raw, fwd, eval_fwd = _network(cfg, ctx)
        n_params = count_params(raw)

        train_loader = _loader(_dataset(cfg, ctx, True), cfg, ctx, True)
        test_loader = _loader(_dataset(cfg, ctx, False), cfg, ctx, False)
        steps_per_epoch = _steps(train_loader, cfg.steps_per_epoch)

        lr = cfg.lr * (ctx.world if cfg.scale_lr else 1)
        optimizer = torch.optim.SGD(raw.parameters(), lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(
            cfg.schedule, cfg.epochs, steps_per_epoch, cfg.lr_min / cfg.lr, cfg.decay, cfg.warmup_epochs))
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp is torch.float16)

        start_epoch, best_top1, best_epoch = 0, -1.0, None
        record = {}
        if resume_from:
            ck = folder.load(resume_from, FORMAT, RESUME, cfg.to_dict())
            raw.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            scaler.load_state_dict(ck["scaler"])
            ranks = ck["ranks"]
            if len(ranks) == ctx.world:
                set_rng_state(ranks[ctx.rank]["rng"])
                if isinstance(train_loader, DeviceLoader) and "loader" in ranks[ctx.rank]:
                    train_loader.load_state_dict(ranks[ctx.rank]["loader"])
            elif ctx.main:
                warnings.warn(f"checkpoint was written by {len(ranks)} processes, now {ctx.world}: "
                              f"random streams restart from the seed")
            start_epoch, best_top1, best_epoch = ck["epoch"] + 1, ck["best_top1"], ck["best_epoch"]
            record = dict(ck.get("record", {}))

        folder.start(cfg.to_dict(), start_epoch)
        folder.log.log(event="resume" if resume_from else "start", first_epoch=start_epoch + 1, params=n_params,
                       world=ctx.world, device=str(ctx.device), lr=lr, steps_per_epoch=steps_per_epoch)
        writer = folder.tensorboard(cfg.tensorboard, start_epoch + 1)
        show = show_progress(cfg.progress, ctx.main)
        try:
            for epoch in range(start_epoch, cfg.epochs):
                n = epoch + 1  # epochs count from 1 in the log, the console and TensorBoard
                raw.drop_path_prob = cfg.drop_path_prob * epoch / cfg.epochs
                train_loader.sampler.set_epoch(epoch)
                lr_now = optimizer.param_groups[0]["lr"]
                t0 = time.time()
                with progress_bar(steps_per_epoch, f"epoch {n}/{cfg.epochs}", show, "train") as bar:
                    stats = train_epoch(raw, fwd, train_loader, optimizer, scheduler, scaler, cfg, ctx, bar, amp)
                train_time = time.time() - t0
                record = dict(event="epoch", epoch=n, lr=lr_now, drop_path_prob=raw.drop_path_prob, **stats,
                              train_time=train_time, images_per_s=stats["train_images"] / max(train_time, 1e-9))
                if n % cfg.eval_every == 0 or n == cfg.epochs:
                    record.update(evaluate(eval_fwd, raw, test_loader, cfg, ctx, cfg.eval_batches, amp))
                    if record["test_top1"] > best_top1:
                        best_top1, best_epoch = record["test_top1"], n
                        if ctx.main:
                            save_checkpoint(folder.file(BEST), cpu_state(raw))
                record.update(best_top1=best_top1, best_epoch=best_epoch, epoch_time=time.time() - t0)
                per_rank = {"rng": get_rng_state()}
                if isinstance(train_loader, DeviceLoader):
                    per_rank["loader"] = train_loader.state_dict()
                ranks = gather_objects(per_rank)
                if ctx.main:
                    save_checkpoint(folder.file(LAST), cpu_state(raw))
                folder.save(dict(
                    format=FORMAT, epoch=epoch, config=cfg.to_dict(), model=raw.state_dict(),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    scaler=scaler.state_dict(), ranks=ranks, best_top1=best_top1, best_epoch=best_epoch,
                    world=ctx.world, record=record), n)
                folder.log.log(record)
                if ctx.main:
                    print(_epoch_line(record, cfg.epochs), flush=True)
                if writer is not None:
                    for k, v in record.items():
                        if isinstance(v, (int, float)) and k not in ("epoch", "best_epoch"):
                            writer.add_scalar(k.replace("_", "/", 1), v, n)
                    writer.flush()
                barrier()
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)
        except KeyboardInterrupt:
            raise folder.interrupted(cfg.epochs) from None
        finally:
            if writer is not None:
                writer.close()
        summary = dict(output=cfg.output, params=n_params, epochs=cfg.epochs, best_top1=best_top1,
                       best_epoch=best_epoch, last_top1=record.get("test_top1"),
                       last_top5=record.get("test_top5"), world=ctx.world)
        if record:
            folder.log.log(event="end", **summary)
        return summary
