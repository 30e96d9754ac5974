"""The search loop: per step an architecture step then a weight step (bi-level), per epoch a cosine
LR step, evaluation of the supernet on the architecture half, derivation and logging of the
genotype, and a checkpoint from which --resume continues exactly (same final genotype)."""
import contextlib
import json
import os
import time
import warnings

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import genotypes as G
from ..data import dataset_info, get_dataset
from ..utils import (AverageMeter, JsonlLogger, accuracy, get_rng_state, load_checkpoint, save_checkpoint,
                     set_rng_state, set_seed)
from . import distributed as D
from .bilevel import BilevelOptimizer
from .config import SearchConfig, build_supernet
from .data import SearchData

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
# Fields that must match between a checkpoint and the resuming run: those that shape the supernet
# and its data, and those that the checkpoint's optimiser and LR-schedule states would silently
# override (a resumed run keeps the old learning rates and cosine period).
_STRUCTURAL = ("space", "dataset", "C", "layers", "cells_per_stage", "window", "n_max", "n_min", "genotype",
               "batch_size", "seed", "order", "train_portion", "accumulate",
               "epochs", "lr", "lr_min", "momentum", "weight_decay", "arch_lr", "arch_betas", "arch_weight_decay")
# Fields that change where a search runs or what it reports, not what it computes; a change of any
# other field is honoured with a warning that the run will differ from an uninterrupted one.
_RESUME_FREE = ("out", "data_root", "download", "device", "fused", "deterministic", "workers", "resume", "progress",
                "tensorboard", "plot", "log_every")


def genotype_analysis(genotype):
    """Per stage of a StageGenotype: longest chain of cells, expected depth, dead cells; plus the
    averages. Empty for cell genotypes."""
    if not isinstance(genotype, G.StageGenotype):
        return {}
    stages = []
    for dag, concat in G.stages(genotype):
        stages.append(dict(cells=len(dag), depth=G.stage_depth(dag, concat),
                           expected_depth=G.expected_depth(dag, concat), dead_cells=G.dead_cells(dag, concat),
                           live_cells=len(dag) - len(G.dead_cells(dag, concat))))
    return dict(stages=stages,
                avg_depth=sum(s["depth"] for s in stages) / len(stages),
                avg_expected_depth=sum(s["expected_depth"] for s in stages) / len(stages),
                num_dead_cells=sum(len(s["dead_cells"]) for s in stages))


def _plot(genotype, path, caption=None):
    """genotype.png via hdas_ext.viz; without graphviz's `dot` binary viz leaves genotype.dot
    (renderable later), without its Python package nothing is drawn, and the search goes on."""
    from .. import viz

    try:
        return viz.render(viz.genotype_graph(genotype, caption=caption), path + ".png")
    except (ImportError, RuntimeError) as e:
        return str(e)


class Search:
    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg = cfg.resolved()
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
        self.device = D.init_from_env(device)
        if cfg.amp != "none" and self.device.type != "cuda":
            raise ValueError(f"amp={cfg.amp!r} needs a CUDA device (got {self.device})")
        self.rank, self.world = D.rank(), D.world_size()
        self.main = self.rank == 0
        set_seed(cfg.seed, cfg.deterministic)
        info = dataset_info(cfg.dataset)
        self.model = build_supernet(cfg, info["num_classes"], info["in_channels"]).to(self.device)
        D.broadcast_(self.model.alphas())  # identical architecture on every rank
        self.w_optimizer = torch.optim.SGD(self.model.weights(), cfg.lr, momentum=cfg.momentum,
                                           weight_decay=cfg.weight_decay)
        self.a_optimizer = torch.optim.Adam(self.model.alphas(), cfg.arch_lr, betas=cfg.arch_betas,
                                            weight_decay=cfg.arch_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, cfg.epochs, eta_min=cfg.lr_min)
        fp16 = cfg.amp == "fp16"
        self.w_scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.a_scaler = torch.amp.GradScaler("cuda") if fp16 else None
        amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
        dataset = get_dataset(cfg.dataset, cfg.data_root, train=True, augment=cfg.augment, download=cfg.download)
        eval_dataset = get_dataset(cfg.dataset, cfg.data_root, train=True, augment=False)
        self.data = SearchData(dataset, eval_dataset, cfg.batch_size, cfg.seed, self.device, cfg.train_portion,
                               self.rank, self.world, cfg.accumulate, cfg.workers)
        self.ddp_net = None
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_net = DistributedDataParallel(self.model.net, device_ids=ids)
        self.optimizer = BilevelOptimizer(
            self.model, self.w_optimizer, self.a_optimizer, order=cfg.order, grad_clip=cfg.grad_clip,
            delta=cfg.delta, gamma=cfg.gamma, loss_mode=cfg.loss_mode, ddp_net=self.ddp_net,
            amp_dtype=amp_dtype, w_scaler=self.w_scaler, a_scaler=self.a_scaler)
        self.start_epoch, self.global_step = 0, 0
        self.best = {"acc": -1.0, "epoch": None, "genotype": None}
        self.out = cfg.out
        self._load_or_start()
        self.logger = JsonlLogger(os.path.join(self.out, LOG), enabled=self.main)
        self.writer = None
        if self.main and cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the tensorboard package is optional
                print("[search] tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(os.path.join(self.out, "tb"), purge_step=self.global_step)

    # ---- checkpointing -------------------------------------------------------------------
    def _ckpt_path(self):
        return os.path.join(self.out, CHECKPOINT)

    def _load_or_start(self):
        path = self._ckpt_path()
        exists = os.path.isfile(path)
        if exists and not self.cfg.resume:
            raise FileExistsError(f"--out {self.out!r} already holds a checkpoint; pass --resume to continue "
                                  "it or choose another --out")
        if self.main:
            os.makedirs(self.out, exist_ok=True)
        if not exists:
            if self.cfg.resume and self.main:
                print(f"[search] --resume: no checkpoint in {self.out!r}, starting from scratch")
            if self.main:
                with open(os.path.join(self.out, "config.json"), "w") as f:
                    json.dump(self.cfg.to_dict(), f, indent=1)
            return
        state = load_checkpoint(path, map_location=self.device)
        old, new = state["config"], self.cfg.to_dict()
        changed = [k for k in new if k not in _RESUME_FREE and old.get(k) != new[k]]
        refused = [k for k in changed if k in _STRUCTURAL]
        if refused:
            raise ValueError(f"cannot resume {path}: settings differ from the checkpoint's: "
                             + ", ".join(f"{k}={old.get(k)!r} (now {new[k]!r})" for k in refused)
                             + "; start a new search (another --out) to change them")
        if changed and self.main:
            warnings.warn(f"resuming with changed settings {changed}: the search will differ from an "
                          "uninterrupted one")
        if old.get("world", 1) != self.world:
            raise ValueError(f"cannot resume {path}: it was written by {old.get('world', 1)} processes, now {self.world}")
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
            self._truncate_log(self.start_epoch)
            print(f"[search] resumed from {path} at epoch {self.start_epoch}")

    def _truncate_log(self, epoch):
        """Drop log records of epochs the checkpoint does not hold (written before a kill)."""
        path = os.path.join(self.out, LOG)
        if not os.path.exists(path):
            return
        with open(path) as f:
            rows = [r for r in (json.loads(line) for line in f if line.strip()) if r.get("epoch", -1) < epoch]
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def _save(self, epoch):
        rng = get_rng_state()
        data_state = self.data.state_dict()
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, (rng, data_state))
            rngs, datas = [g[0] for g in gathered], [g[1] for g in gathered]
        else:
            rngs, datas = [rng], [data_state]
        if not self.main:
            return
        best = dict(self.best)
        best["genotype"] = None if best["genotype"] is None else G.to_json(best["genotype"])
        save_checkpoint(self._ckpt_path(), {
            "epoch": epoch + 1, "global_step": self.global_step,
            "config": dict(self.cfg.to_dict(), world=self.world),
            "model": self.model.state_dict(),
            "w_optimizer": self.w_optimizer.state_dict(), "a_optimizer": self.a_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "w_scaler": self.w_scaler.state_dict() if self.w_scaler is not None else None,
            "a_scaler": self.a_scaler.state_dict() if self.a_scaler is not None else None,
            "data": datas, "rng": rngs, "best": best,
        })

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
        bar = None
        if self.main and cfg.progress:
            try:
                from tqdm import tqdm
            except ImportError:  # progress bars are optional
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        for step, (train_chunks, val_chunks) in enumerate(self.data.epoch()):
            if step >= steps:
                break
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
            if self.writer is not None and self.global_step % cfg.log_every == 0:
                for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
                    if meters[k].count:
                        self.writer.add_scalar(f"step/{k}", meters[k].avg, self.global_step)
                self.writer.add_scalar("step/lr", lr, self.global_step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{meters['train_loss'].avg:.3f}", acc=f"{meters['train_acc'].avg:.1f}")
        if bar is not None:
            bar.close()
        self.scheduler.step()
        return lr, {k: m.avg for k, m in meters.items() if m.count}

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
        loss_sum, correct, count = D.all_reduce_sum([loss_sum, correct, count], self.device)
        self.model.train()
        return loss_sum / max(count, 1), 100.0 * correct / max(count, 1)

    def run(self):
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.time()
            lr, train = self.train_epoch(epoch)
            eval_loss, eval_acc = self.evaluate()
            genotype = self.model.genotype()
            if eval_acc > self.best["acc"]:
                self.best = {"acc": eval_acc, "epoch": epoch, "genotype": genotype}
            record = dict(kind="epoch", epoch=epoch, lr=lr, seconds=round(time.time() - t0, 3), **train,
                          eval_loss=eval_loss, eval_acc=eval_acc, genotype=G.to_json(genotype),
                          analysis=genotype_analysis(genotype), arch_weights=self.model.arch_state(),
                          best_epoch=self.best["epoch"], best_acc=self.best["acc"])
            if hasattr(self.model, "stage_lengths"):
                record["stage_lengths"] = self.model.stage_lengths()
            self._report(epoch, record, genotype)
            self._save(epoch)
        if self.writer is not None:
            self.writer.close()
        last = self.model.genotype()
        return dict(last=last, best=self.best["genotype"] or last, best_acc=self.best["acc"],
                    best_epoch=self.best["epoch"], analysis=genotype_analysis(last))

    def _report(self, epoch, record, genotype):
        if not self.main:
            return
        self.logger.log(record)
        for name, g in (("last", genotype), ("best", self.best["genotype"])):
            with open(os.path.join(self.out, f"genotype_{name}.json"), "w") as f:
                f.write(G.to_json(g, indent=1))
        if self.writer is not None:
            for k in ("train_loss", "train_acc", "val_loss", "val_acc", "eval_loss", "eval_acc", "depth_loss",
                      "comp_loss"):
                if k in record:
                    self.writer.add_scalar(f"epoch/{k}", record[k], epoch)
            a = record["analysis"]
            if a:
                self.writer.add_scalar("epoch/avg_depth", a["avg_depth"], epoch)
                self.writer.add_scalar("epoch/dead_cells", a["num_dead_cells"], epoch)
            self.writer.add_text("genotype", repr(genotype), epoch)
        if self.cfg.plot:
            _plot(genotype, os.path.join(self.out, "genotype"), caption=f"epoch {epoch + 1}")
        a = record["analysis"]
        extra = f" depth {a['avg_depth']:.2f} dead {a['num_dead_cells']}" if a else ""
        print(f"[search] epoch {epoch + 1}/{self.cfg.epochs} lr {record['lr']:.4g} "
              f"train {record.get('train_loss', float('nan')):.3f}/{record.get('train_acc', 0):.1f}% "
              f"arch-half {record['eval_loss']:.3f}/{record['eval_acc']:.1f}%{extra} ({record['seconds']:.1f}s)")
        print(f"[search] genotype = {genotype!r}", flush=True)


def run_search(cfg: SearchConfig):
    return Search(cfg).run()
