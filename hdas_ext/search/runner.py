"""The search loop: per step an architecture step then a weight step (bi-level), per epoch a cosine
LR step, evaluation of the supernet on the architecture half, derivation and logging of the
genotype, and a checkpoint from which --resume continues exactly (same final genotype)."""
import contextlib
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import genotypes as G
from ..data import dataset_info, get_dataset
from ..runtime import (RunFolder, all_reduce_sum, amp_dtype, broadcast_, distributed_session, gather_objects,
                       get_rng_state, init_distributed, progress_bar, set_rng_state, set_seed, show_progress)
from ..supernets import SEARCH_SPACES, build_supernet
from .bilevel import BilevelOptimizer
from .config import RESUME, SearchConfig
from .data import SearchData
from .losses import DEFAULT_MODE
from .metrics import AverageMeter, accuracy
from .report import draw_genotype, genotype_analysis

FORMAT = "hdas_ext.search/1"


class Search:
    def __init__(self, cfg: SearchConfig, ctx=None):
        """ctx: a runtime.DistContext (default: from the environment, as torchrun describes it)."""
        self.cfg = cfg = cfg.resolved()
        self.ctx = ctx = ctx or init_distributed(cfg.device)
        self.device, self.rank, self.world, self.main = ctx.device, ctx.rank, ctx.world, ctx.main
        amp = amp_dtype(cfg.amp, self.device)
        self.folder = RunFolder(cfg.output, self.main, tag="search")
        resume_from = self.folder.checkpoint_to_resume(cfg.resume)
        set_seed(cfg.seed, cfg.deterministic)
        info = dataset_info(cfg.dataset)
        settings = {name: getattr(cfg, name) for name in SEARCH_SPACES[cfg.space].settings}
        self.model = build_supernet(cfg.space, cfg.init_channels, info["num_classes"], info["in_channels"],
                                    info["image_size"], cfg.fused, cfg.recompute, **settings).to(self.device)
        broadcast_(self.model.alphas())  # identical architecture on every rank
        self.w_optimizer = torch.optim.SGD(self.model.weights(), cfg.lr, momentum=cfg.momentum,
                                           weight_decay=cfg.weight_decay)
        self.a_optimizer = torch.optim.Adam(self.model.alphas(), cfg.arch_lr, betas=cfg.arch_betas,
                                            weight_decay=cfg.arch_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, cfg.epochs, eta_min=cfg.lr_min)
        fp16 = amp is torch.float16
        self.w_scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.a_scaler = torch.amp.GradScaler("cuda") if fp16 else None
        dataset = get_dataset(cfg.dataset, cfg.data_root, train=True, augment=cfg.augment, download=cfg.download)
        eval_dataset = get_dataset(cfg.dataset, cfg.data_root, train=True, augment=False)
        self.data = SearchData(dataset, eval_dataset, cfg.batch_size, cfg.seed, self.device, cfg.train_portion,
                               self.rank, self.world, cfg.accumulate, cfg.num_workers)
        self.ddp_net = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_net = DistributedDataParallel(self.model.net, device_ids=ids)
        self.optimizer = BilevelOptimizer(
            self.model, self.w_optimizer, self.a_optimizer, order=cfg.order, grad_clip=cfg.grad_clip,
            delta=cfg.delta or 0.0, gamma=cfg.gamma or 0.0, loss_mode=cfg.loss_mode or DEFAULT_MODE,
            ddp_net=self.ddp_net, amp_dtype=amp, w_scaler=self.w_scaler, a_scaler=self.a_scaler)
        self.start_epoch, self.global_step = 0, 0
        self.best = {"acc": -1.0, "epoch": None, "genotype": None}
        if resume_from is not None:
            self._load(resume_from)
        self.folder.start(cfg.to_dict(), self.start_epoch)
        self.writer = self.folder.tensorboard(cfg.tensorboard, self.global_step)

    # ---- checkpointing -------------------------------------------------------------------
    def _load(self, path):
        state = self.folder.load(path, FORMAT, RESUME, self.cfg.to_dict(), map_location=self.device,
                                 unmarked=FORMAT)
        written_by = state["config"].get("world", 1)
        if written_by != self.world:
            raise ValueError(f"cannot resume {path}: it was written by {written_by} processes, now {self.world}")
        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.a_optimizer.load_state_dict(state["a_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for scaler, key in ((self.w_scaler, "w_scaler"), (self.a_scaler, "a_scaler")):
            if scaler is not None and state.get(key):
                scaler.load_state_dict(state[key])
        self.data.load_state_dict(state["data"][self.rank])
        set_rng_state(state["rng"][self.rank])
        self.start_epoch, self.global_step = state["epoch"], state["global_step"]
        self.best = dict(state["best"])
        if self.best["genotype"] is not None:
            self.best["genotype"] = G.from_json(self.best["genotype"])
        if self.main:
            print(f"[search] resumed from {path} after epoch {self.start_epoch}")

    def _save(self, epoch):
        gathered = gather_objects((get_rng_state(), self.data.state_dict()))
        if not self.main:
            return
        best = dict(self.best)
        best["genotype"] = None if best["genotype"] is None else G.to_json(best["genotype"])
        self.folder.save({
            "format": FORMAT, "epoch": epoch + 1, "global_step": self.global_step,
            "config": dict(self.cfg.to_dict(), world=self.world),
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(), "a_optimizer": self.a_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "w_scaler": self.w_scaler.state_dict() if self.w_scaler is not None else None,
            "a_scaler": self.a_scaler.state_dict() if self.a_scaler is not None else None,
            "data": [g[1] for g in gathered], "rng": [g[0] for g in gathered], "best": best,
        }, epoch + 1)

    # ---- loop ----------------------------------------------------------------------------
    def train_epoch(self, epoch):
        cfg = self.cfg
        self.model.train()
        self.data.set_epoch(epoch)
        lr = self.scheduler.get_last_lr()[0]
        update_arch = epoch >= cfg.warmup_epochs
        meters = {k: AverageMeter() for k in ("train_loss", "train_acc", "val_loss", "val_acc",
                                               "depth_loss", "comp_loss")}
        steps = self.data.steps_per_epoch()
        if cfg.steps_per_epoch:
            steps = min(steps, cfg.steps_per_epoch)
        with progress_bar(steps, f"epoch {epoch + 1}/{cfg.epochs}", show_progress(cfg.progress, self.main),
                          "search") as bar:
            for step, (train_chunks, val_chunks) in enumerate(self.data.epoch()):
                if step >= steps:
                    break
                self._step(train_chunks, val_chunks, lr, update_arch, meters)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{meters['train_loss'].avg:.3f}", acc=f"{meters['train_acc'].avg:.1f}")
        self.scheduler.step()
        return lr, {k: m.avg for k, m in meters.items() if m.count}

    def _step(self, train_chunks, val_chunks, lr, update_arch, meters):
        stats, train_logits, val_logits = self.optimizer.step(train_chunks, val_chunks, lr, update_arch)
        n = sum(y.numel() for _, y in train_chunks)
        meters["train_loss"].update(stats.pop("train_loss"), n)
        meters["train_acc"].update(self._acc(train_logits, train_chunks), n)
        if val_logits is not None:
            meters["val_loss"].update(stats.pop("val_loss"), n)
            meters["val_acc"].update(self._acc(val_logits, val_chunks), n)
        for k, v in stats.items():
            if k in meters:
                meters[k].update(v)
        self.global_step += 1
        if self.writer is not None and self.global_step % self.cfg.log_every == 0:
            for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
                if meters[k].count:
                    self.writer.add_scalar(f"step/{k}", meters[k].avg, self.global_step)
            self.writer.add_scalar("step/lr", lr, self.global_step)

    @staticmethod
    def _acc(logits, chunks):
        return sum(accuracy(lg, y)[0] * y.numel() for lg, (_, y) in zip(logits, chunks)) / sum(
            y.numel() for _, y in chunks)

    @torch.no_grad()
    def evaluate(self):
        """Supernet loss / top-1 on (this rank's shard of) the architecture half, summed over ranks."""
        self.model.eval()
        loss_sum, correct, count = 0.0, 0.0, 0
        ctx = (torch.autocast(self.device.type, dtype=self.optimizer.amp_dtype) if self.optimizer.amp_dtype
               else contextlib.nullcontext())
        for i, (x, y) in enumerate(self.data.eval_loader):
            if self.cfg.eval_batches is not None and i >= self.cfg.eval_batches:
                break
            x, y = x.to(self.device), y.to(self.device)
            with ctx:
                logits = self.model(x).float()
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += y.numel()
        loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], self.device)
        self.model.train()
        return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)

    def run(self):
        try:
            self._run_epochs()
        except KeyboardInterrupt:
            raise self.folder.interrupted(self.cfg.epochs) from None
        finally:
            if self.writer is not None:
                self.writer.close()
        last = self.model.genotype()
        return dict(last=last, best=self.best["genotype"] or last, best_acc=self.best["acc"],
                    best_epoch=self.best["epoch"], analysis=genotype_analysis(last))

    def _run_epochs(self):
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.time()
            lr, train = self.train_epoch(epoch)
            eval_loss, eval_acc = self.evaluate()
            genotype = self.model.genotype()
            if eval_acc > self.best["acc"]:
                self.best = {"acc": eval_acc, "epoch": epoch + 1, "genotype": genotype}
            record = dict(event="epoch", epoch=epoch + 1, lr=lr, seconds=round(time.time() - t0, 3), **train,
                          eval_loss=eval_loss, eval_acc=eval_acc, genotype=G.to_json(genotype),
                          analysis=genotype_analysis(genotype), arch_weights=self.model.arch_state(),
                          best_epoch=self.best["epoch"], best_acc=self.best["acc"])
            lengths = self.model.stage_lengths()
            if lengths is not None:
                record["stage_lengths"] = lengths
            self._report(epoch, record, genotype)
            self._save(epoch)

    def _report(self, epoch, record, genotype):
        if not self.main:
            return
        n = record["epoch"]
        self.folder.log.log(record)
        for name, g in (("last", genotype), ("best", self.best["genotype"])):
            with open(self.folder.file(f"genotype_{name}.json"), "w") as f:
                f.write(G.to_json(g, indent=1))
        if self.writer is not None:
            for k in ("train_loss", "train_acc", "val_loss", "val_acc", "eval_loss", "eval_acc", "depth_loss",
                      "comp_loss"):
                if k in record:
                    self.writer.add_scalar(f"epoch/{k}", record[k], n)
            a = record["analysis"]
            if a:
                self.writer.add_scalar("epoch/avg_depth", a["avg_depth"], n)
                self.writer.add_scalar("epoch/dead_cells", a["num_dead_cells"], n)
            self.writer.add_text("genotype", repr(genotype), n)
        if self.cfg.plot:
            draw_genotype(genotype, self.folder.file("genotype"), caption=f"epoch {n}")
        a = record["analysis"]
        extra = f" depth {a['avg_depth']:.2f} dead {a['num_dead_cells']}" if a else ""
        print(f"[search] epoch {n}/{self.cfg.epochs} lr {record['lr']:.4g} "
              f"train {record.get('train_loss', float('nan')):.3f}/{record.get('train_acc', 0):.1f}% "
              f"arch-half {record['eval_loss']:.3f}/{record['eval_acc']:.1f}%{extra} ({record['seconds']:.1f}s)")
        print(f"[search] genotype = {genotype!r}", flush=True)


def run_search(cfg: SearchConfig):
    """Run a search in this process (or this torchrun rank); returns the last and best genotypes."""
    with distributed_session(cfg.device) as ctx:
        return Search(cfg, ctx).run()
