"""Seconds per VQ training step of the ShapeWorld model (forward, backward, AdamW), fp32 against bf16 autocast.

    python -m benchmarks.vq_speed --batch 16 64 --threads 2

The VQ's convolutions are most of the CPU pretraining time (README, "ShapeWorld"); this measures whether
a larger batch or bf16 would buy more images per second. The formats (channels-last, the same losses'
shapes) are those of ``t2i_r1.shapeworld.pretrain.train_vq``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from t2i_r1.shapeworld.model import ShapeWorldModelSpec, build_model


def seconds_per_step(vq, side: int, batch: int, bf16: bool, steps: int, warmup: int = 2) -> float:
    opt = torch.optim.AdamW(vq.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, side, side).mul(2).sub(1).contiguous(memory_format=torch.channels_last)  # (N, 3, S, S)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            recon = vq.decoder(vq.post_quant_conv(vq.quant_conv(vq.encoder(x))))  # (N, 3, S, S)
        loss = F.mse_loss(recon.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vq_speed")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = ShapeWorldModelSpec()
    vq = build_model(spec).model.model.vqmodel
    vq.train().requires_grad_(True).to(memory_format=torch.channels_last)
    print(f"{'batch':>5} {'precision':>9} {'s/step':>7} {'ms/image':>8}")
    for batch in args.batch:
        for bf16 in (False, True):
            s = seconds_per_step(vq, 8 * spec.grid, batch, bf16, args.steps)  # the image is 8 * grid px wide
            print(f"{batch:>5} {'bf16' if bf16 else 'fp32':>9} {s:>7.3f} {1000 * s / batch:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
