"""CPU cost of scoring a ShapeWorld model: seconds per held-out image, by phase and setting.

    python -m benchmarks.shapeworld_eval_speed [--model DIR] [--prompts 64] [--threads 1]

Times ``evaluate_policy`` (plan sampling, image sampling with guidance, VQ decode, exact evaluator) on
the first ``--prompts`` held-out prompts of the protocol, 2 images each, for the VQ in the default and
in the channels-last memory format and two prompt batch sizes. Reported in CPU seconds of this process
(``time.process_time``), which a busy machine inflates far less than wall time at one thread.
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    import torch

    from t2i_r1.shapeworld.model import DEFAULT_ASSET, evaluate_policy, load_policy
    from t2i_r1.shapeworld.protocol import Protocol

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_ASSET))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = load_policy(args.model)
    prompts = Protocol(per_cell=2).prompts()[: args.prompts]
    vq = policy.model.model.vqmodel
    print(f"{'vq memory format':<18}{'prompts/batch':>14}{'CPU s/image':>13}")
    for name, fmt in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last)):
        vq.to(memory_format=fmt)
        for batch in args.batches:
            start = time.process_time()
            result = evaluate_policy(policy, prompts, samples=2, seed=1, batch_prompts=batch)
            seconds = (time.process_time() - start) / len(result.images)
            print(f"{name:<18}{batch:>14}{seconds:>13.4f}", flush=True)


if __name__ == "__main__":
    main()
