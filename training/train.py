"""Train faceveil's built-in 64x64 face diffusion model (``face64-vN``).

Data are synthetic faces drawn on the fly from the DCGAN of ``gan-face-generate``
(see ``dcgan.py``). The batch of step ``k`` is a function of ``(--seed, k)`` alone:
one random generator, on the training device and seeded by them, draws the batch's
DCGAN latents, timesteps and noise in one go (``batch_for_step``), so a resumed run
draws exactly the batches an uninterrupted one would, and nothing waits on the CPU.
The model is a diffusers ``UNet2DModel`` working on pixel-unshuffled images: a
``(3, 64, 64)`` face is folded into ``(48, 16, 16)`` with ``pixel_unshuffle(x, 4)``,
the UNet predicts ``v`` in that space, and ``pixel_shuffle(., 4)`` folds back. The
noise schedule is a 1000-step ``DDPMScheduler`` with linear betas,
``prediction_type="v_prediction"`` and no clipping.

Everything a run needs to continue lives in ``OUT/checkpoint.pt`` (model, EMA,
optimizer, step, elapsed seconds). ``--init-from MODEL_DIR`` starts a new run from
exported weights (``src/faceveil/weights/face64-v2``: model and EMA both, a fresh
optimizer, the learning-rate warm-up again, the step count continued). The run saves
every ``--save-every`` seconds, at the end, and on SIGTERM / SIGINT (Ctrl-C).

Speed (the loop never waits on the device between log steps): the EMA is one
``torch._foreach_lerp_`` over all parameters, the loss is summed on the device and read
back (and checked for NaN/inf) only every ``--log-every`` steps, AdamW is fused on CUDA,
the UNet runs under bf16 autocast on CUDA (weights, optimizer, EMA, loss and DDIM
sampling stay fp32) in channels-last layout, and ``--compile`` wraps it in
``torch.compile``. ``--profile N`` prints where N steps spend their time.

Examples::

    python training/train.py --out /tmp/run --max-steps 20          # smoke test
    nohup python training/train.py --out /work/train-run --resume \\
        --max-minutes 110 > /work/train-run/stdout.log 2>&1 &      # CPU
    python training/train.py --out runs/v3 --device cuda --threads 8 --batch-size 256 \\
        --compile --init-from src/faceveil/weights/face64-v2 --max-minutes 9   # GPU
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import celeba  # noqa: E402
import dcgan  # noqa: E402

PATCH = 4
IMAGE_SIZE = 64
LATENT_CHANNELS = 3 * PATCH * PATCH  # 48
LATENT_SIZE = IMAGE_SIZE // PATCH  # 16

#: Seeds of the fixed faces used for the validation loss: outside the evaluation
#: range (0 .. 99_999) and far from the training streams' generator seeds.
VALIDATION_SEED_START = 500_000
VALIDATION_TIMESTEPS = (20, 100, 250, 500, 750, 980)

#: The training batch of step k is drawn by a generator seeded with
#: ``DATA_SEED_BASE + seed * 1_000_003 + k``: no DCGAN latent of the evaluation
#: seeds (one ``manual_seed(s)`` each, s < 100_000) can come out of it.
DATA_SEED_BASE = 1 << 40
DATA_STREAM = "per-step generator on the training device (train.py, 2026)"

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
        "norm_num_groups": min(32, *channels),
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


class NoiseTables:
    """``sqrt(alpha_t)`` and ``sqrt(1 - alpha_t)`` of a schedule, on one device, so that
    noising a batch and its v target are two gathers and a few element-wise ops."""

    def __init__(self, scheduler: DDPMScheduler, device: torch.device) -> None:
        ac = scheduler.alphas_cumprod.to(torch.float64)
        self.sqrt_ac = ac.sqrt().to(device, torch.float32)
        self.sqrt_1m = (1.0 - ac).sqrt().to(device, torch.float32)

    def noisy_and_target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(a) x0 + sqrt(1-a) noise, v = sqrt(a) noise - sqrt(1-a) x0)`` at ``t``."""
        a = self.sqrt_ac[t].view(-1, 1, 1, 1)
        b = self.sqrt_1m[t].view(-1, 1, 1, 1)
        return a * x0 + b * noise, a * noise - b * x0


class EMA:
    """Exponential moving average of a model's parameters, updated in one fused call."""

    def __init__(self, ema: nn.Module, model: nn.Module) -> None:
        self.ema_params = list(ema.parameters())
        self.model_params = list(model.parameters())
        if len(self.ema_params) != len(self.model_params):
            raise ValueError("EMA and model have different parameters")

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """``ema = decay * ema + (1 - decay) * model`` for every parameter."""
        torch._foreach_lerp_(self.ema_params, self.model_params, 1.0 - decay)


def ema_decay(step: int, max_decay: float, power: float = 2.0 / 3.0) -> float:
    """EMA warm-up decay ``1 - (1 + step) ** -power``, capped at ``max_decay``."""
    return min(max_decay, max(0.0, 1.0 - (1.0 + step) ** -power))


def learning_rate(step: int, base: float, warmup: int, steps_left: int | None = None,
                  cool_down: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then constant ``base``; with ``cool_down``, a
    linear fall to zero over the last ``cool_down`` steps of the run (``steps_left`` is
    how many remain, this one included): warmup-stable-decay, whose cool-down brings a
    constant-rate run's loss down without choosing its length in advance (Hagele et al.,
    "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", 2024)."""
    rate = base if warmup <= 0 else base * min(1.0, (step + 1) / warmup)
    if cool_down > 0 and steps_left is not None and steps_left <= cool_down:
        rate *= max(steps_left, 0) / cool_down
    return rate


# --------------------------------------------------------------------------
# sampling


@torch.no_grad()
def ddim_sample(
    unet: nn.Module,
    train_scheduler: DDPMScheduler,
    noise: torch.Tensor,
    steps: int = 50,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) sampling without clipping, in fp32.

    Args:
        unet: the model (its device is used).
        train_scheduler: the training schedule; DDIM is built from its config.
        noise: ``(N, 48, 16, 16)`` starting noise in model space.
        steps: number of DDIM steps.

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


def step_generator(step: int, seed: int, device: torch.device) -> torch.Generator:
    """The random generator of training step ``step``, on ``device``."""
    return torch.Generator(device=device).manual_seed(DATA_SEED_BASE + seed * 1_000_003 + step)


def real_count(batch_size: int, fraction: float) -> int:
    """Real faces in a batch of ``batch_size`` for a real-face ``fraction`` (fixed per batch)."""
    return min(batch_size, max(0, round(batch_size * fraction)))


@torch.no_grad()
def batch_for_step(
    step: int,
    batch_size: int,
    generator: nn.Module | None,
    tables: NoiseTables,
    seed: int,
    device: torch.device,
    real: celeba.RealFaces | None = None,
    n_real: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the (noisy latents, timesteps, v targets) of one training step.

    One generator on ``device``, seeded by ``(seed, step)``, draws the DCGAN latents of
    the ``batch_size - n_real`` synthetic faces, the timesteps, the noise and then the
    ``n_real`` real faces and their flips (``real.draw``), in that order: the batch
    depends only on the step number (exact resumption) and never leaves the device.
    Without real faces the stream is the DCGAN-only one of earlier runs.
    """
    gen = step_generator(step, seed, device)
    n_fake = batch_size - n_real
    z = torch.randn(n_fake, dcgan.NZ, 1, 1, generator=gen, device=device)
    t = torch.randint(0, tables.sqrt_ac.numel(), (batch_size,), generator=gen, device=device)
    shape = (batch_size, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
    noise = torch.randn(shape, generator=gen, device=device)
    parts = [generator(z).float()] if n_fake else []
    if n_real:
        if real is None:
            raise ValueError("n_real > 0 needs real faces")
        parts.append(real.draw(n_real, gen))
    x0 = to_latent(torch.cat(parts))
    noisy, target = tables.noisy_and_target(x0, noise, t)
    return noisy, t, target


@torch.no_grad()
def validation_losses(
    unet: nn.Module,
    tables: NoiseTables,
    x0: torch.Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    prefix: str = "val",
) -> dict[str, float]:
    """Mean squared v error of ``unet`` at fixed timesteps on fixed faces
    (``{prefix}_t{t}`` each, and their mean ``{prefix}_mean``)."""
    out = {}
    gen = torch.Generator().manual_seed(12345)
    device = x0.device
    for t_val in VALIDATION_TIMESTEPS:
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.full((x0.shape[0],), t_val, dtype=torch.long, device=device)
        noisy, target = tables.noisy_and_target(x0, noise, t)
        with autocast():
            pred = unet(noisy, t).sample
        out[f"{prefix}_t{t_val}"] = F.mse_loss(pred.float(), target).item()
    out[f"{prefix}_mean"] = sum(out.values()) / len(out)
    return out


def hardware_description(device: torch.device, threads: int, bf16: bool) -> str:
    """A short human-readable description of the training hardware."""
    if device.type == "cuda":
        return (f"{torch.cuda.get_device_name(device)} (CUDA, "
                f"{'bf16 autocast' if bf16 else 'fp32'})")
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


def load_exported(folder: Path) -> dict[str, Any]:
    """Weights and history of an exported model folder (``export.py``'s layout).

    Returns:
        ``{"unet": fp32 state dict, "unet_config", "scheduler_config", "step",
        "seconds", "id"}``; step and seconds are the folder's training totals
        (0 when its ``faceveil.json`` does not say).
    """
    info_path = folder / "faceveil.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if int(info.get("patch_size", PATCH)) != PATCH:
        raise ValueError(f"{folder}: patch_size {info['patch_size']}, this script trains {PATCH}")
    unet = UNet2DModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32,
                                       low_cpu_mem_usage=False)
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    if scheduler.config.prediction_type != "v_prediction":
        raise ValueError(f"{folder}: expected a v-prediction model")
    training = info.get("training", {})
    return {
        "unet": unet.state_dict(),
        "unet_config": {k: v for k, v in unet.config.items() if not k.startswith("_")},
        "scheduler_config": dict(scheduler.config),
        "step": int(training.get("steps", 0)),
        "seconds": float(training.get("seconds", 0.0)),
        "id": info.get("id", folder.name),
    }


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
    p.add_argument(
        "--init-from",
        type=Path,
        help="start a new run from an exported model folder (model and EMA both set to its "
        "weights, a fresh optimizer, the step count continued)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-max-decay", type=float, default=0.999,
                   help="EMA decay cap (0: the EMA is the model); the warm-up counts the steps "
                   "of this run, so an --init-from run leaves the old weights at its own pace")
    p.add_argument("--real", type=Path,
                   help="aligned real faces (celeba.py's .npy cache); its last "
                   f"{celeba.HOLDOUT} faces are held out (validation, memorization control)")
    p.add_argument("--real-fraction", type=float, default=0.8,
                   help="share of each batch drawn from --real, the rest DCGAN faces")
    p.add_argument("--channels", default="96,192,192", help="UNet block_out_channels")
    p.add_argument("--layers-per-block", type=int, default=2)
    p.add_argument(
        "--beta-schedule",
        default="linear",
        choices=["linear", "scaled_linear", "squaredcos_cap_v2"],
    )
    p.add_argument("--seed", type=int, default=0, help="seed of init, data, timesteps and noise")
    p.add_argument("--max-steps", type=int, default=0, help="stop at this step (0: no limit)")
    p.add_argument("--cool-down", type=int, default=0, metavar="N",
                   help="bring the learning rate linearly to zero over the last N steps "
                   "before --max-steps (a run resumed with a new --max-steps cools down then)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop after this many minutes of this process (0: no limit)",
    )
    p.add_argument("--save-every", type=float, default=600.0, help="checkpoint interval in seconds")
    p.add_argument("--eval-every", type=float, default=0.0,
                   help="seconds between evaluations (validation, sample grid), at a "
                   "checkpoint (0: at every checkpoint); on a busy CPU they cost minutes")
    p.add_argument("--log-every", type=int, default=10,
                   help="log interval in steps; the loss is read back (and checked) only then")
    p.add_argument(
        "--sample-count", type=int, default=16, help="faces per sample grid (0: no grids)"
    )
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of sample grids")
    p.add_argument(
        "--validation-faces", type=int, default=32, help="faces of the validation loss (0: none)"
    )
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast of the UNet's forward pass on CUDA (never on CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory layout (default: on CUDA only)")
    p.add_argument("--compile", action="store_true", help="wrap the UNet in torch.compile")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile N steps (after 2 warm-up steps), print the top operations, "
                   "write OUT/profile_trace.json and exit without saving")
    args = p.parse_args(argv)
    if args.cool_down and not args.max_steps:
        p.error("--cool-down needs --max-steps: the steps it counts are the run's last")
    args.channels = tuple(int(c) for c in args.channels.split(","))
    return args


def profile_steps(run_step: Callable[[], None], steps: int, out: Path, cuda: bool) -> None:
    """Profile ``steps`` calls of ``run_step`` and print where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):  # warm-up: allocations, autotuning, compilation
        run_step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            run_step()
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25))
    prof.export_chrome_trace(str(out / "profile_trace.json"))
    print(f"profiled {steps} steps: {wall / steps * 1000:.1f} ms/step (profiler on); "
          f"trace in {out / 'profile_trace.json'}")


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) training; returns the process exit code."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    use_cuda = device.type == "cuda"
    bf16 = use_cuda and args.bf16
    channels_last = use_cuda if args.channels_last is None else args.channels_last
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if bf16:
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
    warmup_from = 0
    init_from: str | None = None
    state: dict[str, Any] | None = None
    init: dict[str, Any] | None = None
    if args.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        config = state["unet_config"]
        step = int(state["step"])
        seconds = float(state["seconds"])
        warmup_from = int(state.get("warmup_from", 0))
        init_from = state.get("init_from")
        if state["scheduler_config"]["beta_schedule"] != args.beta_schedule:
            print("warning: --beta-schedule differs from the checkpoint; using the checkpoint's")
        if state.get("data_stream") != DATA_STREAM:
            print("note: the checkpoint was trained on another data stream; continuing with "
                  "this script's per-step stream")
        scheduler = DDPMScheduler.from_config(state["scheduler_config"])
    elif ckpt_path.exists():
        print(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
        return 2
    elif args.init_from is not None:
        init = load_exported(args.init_from)
        config = init["unet_config"]
        scheduler = DDPMScheduler.from_config(init["scheduler_config"])
        step = warmup_from = init["step"]
        seconds = init["seconds"]
        init_from = init["id"]

    unet = UNet2DModel(**config)
    if init is not None:
        unet.load_state_dict(init["unet"])
    ema = copy.deepcopy(unet).requires_grad_(False)
    if state is not None:
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    unet.to(device, memory_format=memory_format).train()
    ema.to(device, memory_format=memory_format).eval()
    # Fused AdamW runs the whole update in a few kernels on CUDA (foreach on CPU).
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  fused=use_cuda or None)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])  # moved to the parameters' device
    ema_params = EMA(ema, unet)
    forward = torch.compile(unet, backend=args.compile_backend) if args.compile else unet

    real = None
    n_real = 0
    real_val = None
    if args.real is not None:
        crops = celeba.load_cache(args.real)
        train_idx, held_idx = celeba.split(len(crops))
        real = celeba.RealFaces(crops, train_idx, device)
        n_real = real_count(args.batch_size, args.real_fraction)
        if args.validation_faces > 0:
            real_val = to_latent(celeba.RealFaces(crops, held_idx, device).images(
                torch.arange(min(args.validation_faces, len(held_idx)), device=device)))
    real_info = None if real is None else {
        "path": str(args.real), "faces": len(real), "per_batch": n_real}
    if state is not None and state.get("real") != real_info:
        print(f"note: real faces differ from the checkpoint's: {state.get('real')} -> {real_info}")
    generator = dcgan.load_generator(device) if n_real < args.batch_size else None
    tables = NoiseTables(scheduler, device)
    hardware = hardware_description(device, args.threads, bf16)
    n_params = param_count(unet)
    fixed_noise = sample_noise(args.sample_count, seed=2024) if args.sample_count > 0 else None
    val_x0 = None
    if args.validation_faces > 0 and generator is not None:
        val_seeds = range(VALIDATION_SEED_START, VALIDATION_SEED_START + args.validation_faces)
        val_x0 = to_latent(dcgan.generate_faces(generator, val_seeds))
    meta = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "unet_config": config,
        "params": n_params,
        "hardware": hardware,
        "torch": torch.__version__,
        "channels_last": channels_last,
        "init_from": init_from,
        "real": real_info,
    }
    if not args.profile:
        (out / "run.json").write_text(json.dumps(meta, indent=2, default=list))
    print(
        f"device {device} | {hardware} | params {n_params / 1e6:.2f} M | start step {step}"
        + (f" | from {init_from}" if init_from else ""),
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
                "warmup_from": warmup_from,
                "init_from": init_from,
                "data_stream": DATA_STREAM,
                "real": real_info,
            },
            ckpt_path,
        )
        print(f"saved step {step} ({reason}), {seconds / 60:.1f} min trained", flush=True)

    def evaluate() -> None:
        record: dict[str, Any] = {"step": step, "time": time.time(), "seconds": round(seconds, 1)}
        if val_x0 is not None:
            record.update(validation_losses(ema, tables, val_x0.to(device), autocast))
        if real_val is not None:  # held-out real faces: the EMA, and the raw model beside it
            record.update(validation_losses(ema, tables, real_val, autocast, "val_real"))
            unet.eval()
            record.update(validation_losses(unet, tables, real_val, autocast, "raw_real"))
            unet.train()
        if fixed_noise is not None:
            images = ddim_sample(ema, scheduler, fixed_noise, args.sample_steps)
            save_grid(images, out / "samples" / f"step{step:07d}.png")
            save_grid(images, out / "samples" / "latest.png")
        with (out / "eval.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        print("eval " + json.dumps(record), flush=True)

    running = torch.zeros((), device=device)  # loss sum since the last log, on the device

    def train_step() -> tuple[torch.Tensor, float]:
        """One optimizer step; nothing in it waits for the device."""
        nonlocal running
        lr = learning_rate(step - warmup_from, args.lr, args.warmup,
                           args.max_steps - step if args.max_steps else None, args.cool_down)
        for group in optimizer.param_groups:
            group["lr"] = lr
        noisy, t, target = batch_for_step(
            step, args.batch_size, generator, tables, args.seed, device, real, n_real
        )
        if channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        with autocast():
            pred = forward(noisy, t).sample
        loss = F.mse_loss(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), args.grad_clip)
        optimizer.step()
        ema_params.update(ema_decay(step - warmup_from, args.ema_max_decay))
        running += loss.detach()
        return grad_norm, lr

    if args.profile:
        profile_steps(train_step, args.profile, out, use_cuda)
        return 0

    def sync() -> None:
        if use_cuda:
            torch.cuda.synchronize(device)

    stop = StopFlag()
    start_wall = time.time()
    if step == 0 or init is not None:
        evaluate()
    last_save = last_eval = time.time()  # after the first evaluation, however long it took
    count, window_start = 0, time.time()
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
            grad_norm, lr = train_step()
            step += 1
            count += 1
            if step % args.log_every == 0:
                sync()  # once per window, so the window's time is the device's too
                mean_loss = running.item() / count
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"loss is {mean_loss} in the steps up to {step}")
                window = time.time() - window_start
                record = {
                    "step": step,
                    "loss": mean_loss,
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "step_time": window / count,
                    "faces_per_s": round(count * args.batch_size / window, 1),
                    "seconds": round(seconds + time.time() - t0, 1),
                    "time": time.time(),
                }
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(
                    f"step {step} loss {mean_loss:.4f} {record['step_time']:.3f} s/step "
                    f"{record['faces_per_s']:.0f} faces/s",
                    flush=True,
                )
                running.zero_()
                count, window_start = 0, time.time()
            seconds += time.time() - t0
            if time.time() - last_save >= args.save_every:
                sync()
                save("interval")
                if time.time() - last_eval >= args.eval_every:
                    evaluate()
                    last_eval = time.time()
                last_save = time.time()
    except KeyboardInterrupt:
        reason = "keyboard interrupt"
    sync()
    save(reason)
    if reason != "keyboard interrupt" and not stop:
        evaluate()
    print(f"stopped: {reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
