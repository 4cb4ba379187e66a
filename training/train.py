"""Train faceveil's built-in 64x64 face diffusion model (``face64-v1``).

Data are synthetic faces drawn on the fly from the DCGAN of
``gan-face-generate`` (see ``dcgan.py``): training sample ``i`` is the face of
seed ``1_000_000 + i``, so the evaluation seeds ``0 .. 99_999`` are never
seen. The model is a diffusers ``UNet2DModel`` working on pixel-unshuffled
images: a ``(3, 64, 64)`` face is folded into ``(48, 16, 16)`` with
``pixel_unshuffle(x, 4)``, the UNet predicts ``v`` in that space, and
``pixel_shuffle(., 4)`` folds back. The noise schedule is a 1000-step
``DDPMScheduler`` with linear betas, ``prediction_type="v_prediction"`` and no
clipping.

Everything a run needs to continue lives in ``OUT/checkpoint.pt`` (model,
EMA, optimizer, step, elapsed seconds); the data stream and the per-step
noise are functions of the step number, so a resumed run draws exactly the
batches an uninterrupted one would. The run saves every ``--save-every``
seconds, at the end, and on SIGTERM / SIGINT (Ctrl-C).

Examples::

    python training/train.py --out /tmp/run --max-steps 20          # smoke test
    nohup python training/train.py --out /work/train-run --resume \\
        --max-minutes 110 > /work/train-run/stdout.log 2>&1 &      # CPU
    python training/train.py --out runs/gpu --device cuda --threads 8 \\
        --batch-size 128 --lr 5e-4 --max-steps 30000                  # GPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dcgan  # noqa: E402

PATCH = 4
IMAGE_SIZE = 64
LATENT_CHANNELS = 3 * PATCH * PATCH  # 48
LATENT_SIZE = IMAGE_SIZE // PATCH  # 16

#: Seeds of the fixed faces used for the validation loss: outside both the
#: evaluation range (0 .. 99_999) and the training stream (>= 1_000_000).
VALIDATION_SEED_START = 500_000
VALIDATION_TIMESTEPS = (20, 100, 250, 500, 750, 980)

CHECKPOINT_NAME = "checkpoint.pt"


# --------------------------------------------------------------------------
# model and schedule


def unet_config(
    channels: tuple[int, ...] = (96, 192, 192), layers_per_block: int = 2
) -> dict[str, Any]:
    """Return the ``UNet2DModel`` keyword arguments of the face model.

    Args:
        channels: ``block_out_channels``, one entry per resolution
            (16x16, 8x8, 4x4 for three entries).
        layers_per_block: ResNet blocks per resolution on the way down.
    """
    return {
        "sample_size": LATENT_SIZE,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        "block_out_channels": tuple(channels),
        "layers_per_block": layers_per_block,
        "down_block_types": ("DownBlock2D",) * len(channels),
        "up_block_types": ("UpBlock2D",) * len(channels),
        "norm_num_groups": 32,
    }


def make_scheduler(beta_schedule: str = "linear") -> DDPMScheduler:
    """Return the training noise schedule (v-prediction, no clipping)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule=beta_schedule,
        prediction_type="v_prediction",
        clip_sample=False,
        thresholding=False,
    )


def to_latent(images: torch.Tensor) -> torch.Tensor:
    """Fold ``(N, 3, 64, 64)`` images into ``(N, 48, 16, 16)`` model space."""
    return F.pixel_unshuffle(images, PATCH)


def from_latent(latents: torch.Tensor) -> torch.Tensor:
    """Unfold ``(N, 48, 16, 16)`` model-space tensors into ``(N, 3, 64, 64)``."""
    return F.pixel_shuffle(latents, PATCH)


def param_count(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """In-place ``ema = decay * ema + (1 - decay) * model`` over parameters."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)


def ema_decay(step: int, max_decay: float, power: float = 2.0 / 3.0) -> float:
    """EMA warm-up decay ``1 - (1 + step) ** -power``, capped at ``max_decay``."""
    return min(max_decay, max(0.0, 1.0 - (1.0 + step) ** -power))


def learning_rate(step: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant ``base``."""
    if warmup <= 0:
        return base
    return base * min(1.0, (step + 1) / warmup)


# --------------------------------------------------------------------------
# sampling


@torch.no_grad()
def ddim_sample(
    unet: UNet2DModel,
    train_scheduler: DDPMScheduler,
    noise: torch.Tensor,
    steps: int = 50,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) sampling without clipping.

    Args:
        unet: the model (its device is used).
        train_scheduler: the training schedule; DDIM is built from its config.
        noise: ``(N, 48, 16, 16)`` starting noise in model space.
        steps: number of DDIM steps.
        autocast: optional autocast context for the UNet calls.

    Returns:
        Images ``(N, 3, 64, 64)``, unclipped (clamp only for display).
    """
    sched = DDIMScheduler.from_config(
        train_scheduler.config, clip_sample=False, thresholding=False, set_alpha_to_one=True
    )
    sched.set_timesteps(steps)
    device = next(unet.parameters()).device
    z = noise.to(device, torch.float32)
    for t in sched.timesteps:
        with autocast or contextlib.nullcontext():
            v = unet(z, t.to(device)).sample
        z = sched.step(v.float(), t, z, eta=0.0).prev_sample
    return from_latent(z)


def save_grid(images: torch.Tensor, path: Path, columns: int = 4, scale: int = 2) -> None:
    """Save images in [-1, 1] as a PNG grid (clamped only for display)."""
    imgs = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n = imgs.shape[0]
    rows = math.ceil(n / columns)
    grid = torch.zeros(3, rows * IMAGE_SIZE, columns * IMAGE_SIZE, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[:, r * IMAGE_SIZE : (r + 1) * IMAGE_SIZE, c * IMAGE_SIZE : (c + 1) * IMAGE_SIZE] = (
            imgs[i]
        )
    img = Image.fromarray(grid.permute(1, 2, 0).numpy())
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    tmp = path.with_suffix(".tmp.png")
    img.save(tmp)
    os.replace(tmp, path)


def sample_noise(count: int, seed: int) -> torch.Tensor:
    """Fixed starting noise for sample grids (CPU, deterministic)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(count, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, generator=gen)


# --------------------------------------------------------------------------
# training


def batch_for_step(
    step: int,
    batch_size: int,
    generator: nn.Module,
    scheduler: DDPMScheduler,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the (noisy latents, timesteps, v targets) of one training step.

    Faces are the training-range seeds ``step * batch_size ..``; timesteps and
    noise come from a CPU generator seeded by ``(seed, step)``, so the batch
    depends only on the step number (exact resumption).
    """
    faces = dcgan.generate_faces(generator, dcgan.training_seeds(step * batch_size, batch_size))
    x0 = to_latent(faces.to(device))
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    t, noise = t.to(device), noise.to(device)
    noisy = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)
    return noisy, t, target


@torch.no_grad()
def validation_losses(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> dict[str, float]:
    """Mean squared v error of ``unet`` at fixed timesteps on fixed faces."""
    out = {}
    gen = torch.Generator().manual_seed(12345)
    device = x0.device
    for t_val in VALIDATION_TIMESTEPS:
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.full((x0.shape[0],), t_val, dtype=torch.long, device=device)
        noisy = scheduler.add_noise(x0, noise, t)
        with autocast or contextlib.nullcontext():
            pred = unet(noisy, t).sample
        target = scheduler.get_velocity(x0, noise, t)
        out[f"val_t{t_val}"] = F.mse_loss(pred.float(), target).item()
    return out


def hardware_description(device: torch.device, threads: int) -> str:
    """A short human-readable description of the training hardware."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA, bf16 autocast)"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"CPU {cpu}, {threads} thread(s), fp32"


def resolve_device(name: str) -> torch.device:
    """Map ``auto`` to CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class StopFlag:
    """Set by SIGTERM / SIGINT; the loop saves and exits at the next step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: give up immediately
        self.signal = signum

    def __bool__(self) -> bool:
        return self.signal is not None


def log_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Read a JSONL log (missing file: nothing)."""
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, log, samples)")
    p.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt if present"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-max-decay", type=float, default=0.999)
    p.add_argument("--channels", default="96,192,192", help="UNet block_out_channels")
    p.add_argument("--layers-per-block", type=int, default=2)
    p.add_argument(
        "--beta-schedule",
        default="linear",
        choices=["linear", "scaled_linear", "squaredcos_cap_v2"],
    )
    p.add_argument("--seed", type=int, default=0, help="seed of init, timesteps and noise")
    p.add_argument("--max-steps", type=int, default=0, help="stop at this step (0: no limit)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop after this many minutes of this process (0: no limit)",
    )
    p.add_argument("--save-every", type=float, default=600.0, help="checkpoint interval in seconds")
    p.add_argument("--log-every", type=int, default=10, help="log interval in steps")
    p.add_argument(
        "--sample-count", type=int, default=16, help="faces per sample grid (0: no grids)"
    )
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of sample grids")
    p.add_argument(
        "--validation-faces", type=int, default=32, help="faces of the validation loss (0: none)"
    )
    args = p.parse_args(argv)
    args.channels = tuple(int(c) for c in args.channels.split(","))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) training; returns the process exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    use_cuda = device.type == "cuda"
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if use_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    out: Path = args.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_NAME
    log_path = out / "log.jsonl"

    torch.manual_seed(args.seed)
    scheduler = make_scheduler(args.beta_schedule)
    config = unet_config(args.channels, args.layers_per_block)
    step = 0
    seconds = 0.0
    state: dict[str, Any] | None = None
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        config = state["unet_config"]
        step = int(state["step"])
        seconds = float(state["seconds"])
        if state["scheduler_config"]["beta_schedule"] != args.beta_schedule:
            print("warning: --beta-schedule differs from the checkpoint; using the checkpoint's")
        scheduler = DDPMScheduler.from_config(state["scheduler_config"])
    elif ckpt_path.exists():
        print(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
        return 2

    unet = UNet2DModel(**config)
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if state is not None:
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
    unet.to(device).train()
    ema.to(device).eval()
    for group in optimizer.param_groups:  # optimizer state moved with params
        for p in group["params"]:
            for k, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and k != "step":
                    optimizer.state[p][k] = v.to(device)

    generator = dcgan.load_generator(device)
    hardware = hardware_description(device, args.threads)
    n_params = param_count(unet)
    fixed_noise = sample_noise(args.sample_count, seed=2024) if args.sample_count > 0 else None
    val_x0 = None
    if args.validation_faces > 0:
        val_seeds = range(VALIDATION_SEED_START, VALIDATION_SEED_START + args.validation_faces)
        val_x0 = to_latent(dcgan.generate_faces(generator, val_seeds))
    meta_path = out / "run.json"
    meta = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "unet_config": config,
        "params": n_params,
        "hardware": hardware,
        "torch": torch.__version__,
    }
    meta_path.write_text(json.dumps(meta, indent=2, default=list))
    print(
        f"device {device} | {hardware} | params {n_params / 1e6:.2f} M | start step {step}",
        flush=True,
    )

    def save(reason: str) -> None:
        atomic_save(
            {
                "step": step,
                "seconds": seconds,
                "unet": unet.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "unet_config": config,
                "scheduler_config": dict(scheduler.config),
                "batch_size": args.batch_size,
                "hardware": hardware,
                "params": n_params,
                "args": meta["args"],
            },
            ckpt_path,
        )
        print(f"saved step {step} ({reason}), {seconds / 60:.1f} min trained", flush=True)

    def evaluate() -> None:
        record: dict[str, Any] = {"step": step, "time": time.time(), "seconds": round(seconds, 1)}
        if val_x0 is not None:
            record.update(validation_losses(ema, scheduler, val_x0.to(device), autocast()))
        if fixed_noise is not None:
            images = ddim_sample(ema, scheduler, fixed_noise, args.sample_steps, autocast())
            save_grid(images, out / "samples" / f"step{step:07d}.png")
            save_grid(images, out / "samples" / "latest.png")
        with (out / "eval.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        print("eval " + json.dumps(record), flush=True)

    stop = StopFlag()
    start_wall = time.time()
    last_save = time.time()
    running, count, window_start = 0.0, 0, time.time()
    if step == 0:
        evaluate()
    try:
        while True:
            if args.max_steps and step >= args.max_steps:
                reason = "max steps"
                break
            if args.max_minutes and time.time() - start_wall >= args.max_minutes * 60:
                reason = "max minutes"
                break
            if stop:
                reason = f"signal {stop.signal}"
                break
            t0 = time.time()
            lr = learning_rate(step, args.lr, args.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            noisy, t, target = batch_for_step(
                step, args.batch_size, generator, scheduler, args.seed, device
            )
            with autocast():
                pred = unet(noisy, t).sample
            loss = F.mse_loss(pred.float(), target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), args.grad_clip)
            optimizer.step()
            ema_update(ema, unet, ema_decay(step, args.ema_max_decay))
            step += 1
            dt = time.time() - t0
            seconds += dt
            running += loss.item()
            count += 1
            if step % args.log_every == 0:
                record = {
                    "step": step,
                    "loss": running / count,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "step_time": (time.time() - window_start) / count,
                    "seconds": round(seconds, 1),
                    "time": time.time(),
                }
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(
                    f"step {step} loss {record['loss']:.4f} {record['step_time']:.3f} s/step",
                    flush=True,
                )
                running, count, window_start = 0.0, 0, time.time()
            if time.time() - last_save >= args.save_every:
                save("interval")
                evaluate()
                last_save = time.time()
    except KeyboardInterrupt:
        reason = "keyboard interrupt"
    save(reason)
    if reason != "keyboard interrupt" and not stop:
        evaluate()
    print(f"stopped: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
