"""How the ShapeWorld detector holds up when images are degraded the way a decoder may degrade them.

    python -m t2i_r1.shapeworld.robustness [--scenes 500] [--seed 1]

prints, per degradation (Gaussian blur, noise, a 2x bilinear down-and-up, JPEG), the share of
ground-truth objects detected exactly (``evaluator.scene_agreement``), the share of images with the
right number of objects, and the detector's CPU time per image.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from t2i_r1.shapeworld.evaluator import Detector, scene_agreement
from t2i_r1.shapeworld.world import random_scene, render


def degradations(rng: np.random.Generator) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> function of a [H, W, 3] uint8 image; noise draws from ``rng``."""

    def blur_noise(radius: float, sigma: float):
        def f(img: np.ndarray) -> np.ndarray:
            out = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
            return np.clip(out + rng.normal(0, sigma, out.shape), 0, 255).astype(np.uint8) if sigma else out

        return f

    def down_up(img: np.ndarray) -> np.ndarray:
        small = Image.fromarray(img).resize((img.shape[1] // 2, img.shape[0] // 2), Image.BILINEAR)
        return np.asarray(small.resize((img.shape[1], img.shape[0]), Image.BILINEAR))

    def jpeg(img: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=50)
        return np.asarray(Image.open(buf).convert("RGB"))

    return {
        "clean": lambda img: img,
        "blur 1": blur_noise(1.0, 0.0),
        "blur 1 + noise 8": blur_noise(1.0, 8.0),
        "blur 1 + noise 12": blur_noise(1.0, 12.0),
        "blur 1.3 + noise 8": blur_noise(1.3, 8.0),
        "2x down-up": down_up,
        "jpeg q50": jpeg,
    }


def measure_robustness(n_scenes: int = 500, seed: int = 1) -> dict[str, dict[str, float]]:
    """Per degradation: share of objects detected exactly, share of images with the right object
    count, and CPU milliseconds per image."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(n_scenes)]
    detector = Detector()
    table = {}
    for name, degrade in degradations(rng).items():
        images = [degrade(render(s)) for s in scenes]
        # CPU time of this process: wall time on a shared machine measures the neighbours too.
        start = time.process_time()
        found = [detector.detect(img) for img in images]
        ms = (time.process_time() - start) / n_scenes * 1000
        agree = sum(scene_agreement(s, d) for s, d in zip(scenes, found))
        total = sum(len(s.objects) for s in scenes)
        counts = np.mean([len(d) == len(s.objects) for s, d in zip(scenes, found)])
        table[name] = {"objects": agree / total, "counts": float(counts), "ms_per_image": ms, "n_objects": total}
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Detector agreement with the ground truth under degradations.")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for name, row in measure_robustness(args.scenes, args.seed).items():
        print(
            f"{name:20s} objects {row['objects']:.4f} of {row['n_objects']}  "
            f"right count {row['counts']:.3f}  {row['ms_per_image']:.2f} ms/image (CPU)"
        )


if __name__ == "__main__":
    main()
