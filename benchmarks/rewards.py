"""Images per second of each model-based reward on tiny random checkpoints: batched vs one image per call.

Every reward is built through the registry from tiny checkpoints written to a temporary directory in
the same formats as the real releases (an open_clip ``.pt`` for HPS, a release-layout ``.pth`` for the
aesthetic head, transformers directories for CLIP / GIT / BLIP / LLaVA-OneVision), so the whole real
code path runs: preprocessing, tokenisation, batching, forward passes, yes/no scoring.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/rewards.py --n-images 32 --repeats 3

Prints one JSON line per reward, then a table. The numbers measure the per-call overhead the batching
removes (tiny models are dominated by Python and preprocessing, not FLOPs); real-model speed-ups differ.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from t2i_r1.rewards import build_reward

REWARDS = ("hps", "clip", "aesthetic", "git_vqa", "blip_vqa", "orm")
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "?", "a", "green", "red", "blue",
              "pizza", "bench", "dog", "cat", "car", "photo", "of", "wooden", "metallic", "[DEC]"]
ORM_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{image} This image is generated "
    "by a prompt: {prompt}. Does this image accurately represent the prompt? Please answer yes or no without "
    "explanation.<|im_end|>\n<|im_start|>assistant\n"
)


# ---- tiny checkpoints ---------------------------------------------------------------------------


def _clip_tokenizer():
    from transformers import CLIPTokenizer
    from t2i_r1.rewards.hps import byte_to_unicode_table

    symbols = list(byte_to_unicode_table().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])


def write_hps(root: Path) -> dict:
    """An open_clip-layout state dict (2+2 layers, width 32) saved as HPS saves it, and a BPE file."""
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen) * 0.1  # noqa: E731
    width, patch, grid, ctx, embed, vocab = 32, 8, 8, 77, 16, 512 + 2
    sd = {
        "visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width),
        "visual.positional_embedding": r(grid * grid + 1, width), "visual.proj": r(width, embed),
        "token_embedding.weight": r(vocab, width), "positional_embedding": r(ctx, width),
        "text_projection": r(width, embed), "logit_scale": torch.tensor(4.6),
    }
    for name in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.ones(width), torch.zeros(width)
    for tower in ("visual.transformer", "transformer"):
        for i in range(2):
            p = f"{tower}.resblocks.{i}."
            sd.update({p + "ln_1.weight": torch.ones(width), p + "ln_1.bias": torch.zeros(width),
                       p + "ln_2.weight": torch.ones(width), p + "ln_2.bias": torch.zeros(width),
                       p + "attn.in_proj_weight": r(3 * width, width), p + "attn.in_proj_bias": r(3 * width),
                       p + "attn.out_proj.weight": r(width, width), p + "attn.out_proj.bias": r(width),
                       p + "mlp.c_fc.weight": r(4 * width, width), p + "mlp.c_fc.bias": r(4 * width),
                       p + "mlp.c_proj.weight": r(width, 4 * width), p + "mlp.c_proj.bias": r(width)})
    torch.save({"state_dict": sd}, root / "HPS_v2.1_compressed.pt")
    with gzip.open(root / "bpe_simple_vocab_16e6.txt.gz", "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n")  # header only: byte-level symbols, no merges
    return {"checkpoint": root / "HPS_v2.1_compressed.pt", "tokenizer": root / "bpe_simple_vocab_16e6.txt.gz",
            "vision_head_width": 16, "text_head_width": 16}


def write_clip(root: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tok = _clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8),
        projection_dim=16,
    )
    path = root / "clip"
    CLIPModel(config).save_pretrained(path)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(path)
    return path


def write_aesthetic(root: Path, clip_dir: Path) -> dict:
    torch.manual_seed(0)
    sizes = (16, 1024, 128, 64, 16, 1)
    sd = {}
    for release_index, (a, b) in zip((0, 2, 4, 6, 7), zip(sizes[:-1], sizes[1:])):
        layer = torch.nn.Linear(a, b)
        sd[f"layers.{release_index}.weight"], sd[f"layers.{release_index}.bias"] = layer.weight.data, layer.bias.data
    torch.save(sd, root / "sac+logos+ava1-l14-linearMSE.pth")
    return {"checkpoint": root / "sac+logos+ava1-l14-linearMSE.pth", "clip_checkpoint": clip_dir}


def write_git(root: Path) -> Path:
    from transformers import BertTokenizer, CLIPImageProcessorPil, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    config = GitConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8),
        vocab_size=len(BERT_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )
    path = root / "git"
    GitForCausalLM(config).save_pretrained(path)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(BERT_WORDS)})
    GitProcessor(image_processor=ip, tokenizer=tok).save_pretrained(path)
    return path


def write_blip(root: Path) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil, BlipProcessor

    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(BERT_WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64, pad_token_id=0,
                         bos_token_id=BERT_WORDS.index("[DEC]"), sep_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8),
    )
    path = root / "blip"
    BlipForQuestionAnswering(config).save_pretrained(path)
    BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 64, "width": 64}),
                  tokenizer=BertTokenizer(vocab={w: i for i, w in enumerate(BERT_WORDS)})).save_pretrained(path)
    return path


def write_orm(root: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (AddedToken, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              PreTrainedTokenizerFast, Qwen2Config, SiglipVisionConfig)

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [ORM_TEMPLATE.format(image="", prompt="a green pizza and a red bench") + " yes no"] * 10
    tk.train_from_iterator(corpus, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    torch.manual_seed(0)
    config = LlavaOnevisionConfig(
        text_config=Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512).to_dict(),
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=64, patch_size=8,
                                         vision_use_head=False).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=[[64, 64]],
    )
    path = root / "orm"
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_reward_kwargs(root: Path) -> dict[str, dict]:
    clip_dir = write_clip(root)
    return {
        "hps": write_hps(root),
        "clip": {"checkpoint": clip_dir},
        "aesthetic": write_aesthetic(root, clip_dir),
        "git_vqa": {"checkpoint": write_git(root)},
        "blip_vqa": {"checkpoint": write_blip(root)},
        "orm": {"checkpoint": write_orm(root)},
    }


# ---- timing -------------------------------------------------------------------------------------


def _inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    colours, objects = ["green", "red", "blue"], ["pizza", "bench", "dog", "cat", "car"]
    metadata = []
    for i in range(n):  # two attribute phrases per prompt, as T2I-CompBench's attribute prompts have
        a = f"{colours[i % 3]} {objects[i % 5]}"
        b = f"{colours[(i + 1) % 3]} {objects[(i + 2) % 5]}"
        metadata.append({"prompt": f"a {a} and a {b}", "attr_nouns": [a, b], "task_type": "color"})
    return [m["prompt"] for m in metadata], images, metadata


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def benchmark(name: str, kwargs: dict, n: int, repeats: int, device: str, dtype: str, compare_cpu: bool) -> dict:
    start = time.perf_counter()
    reward = build_reward(name, device=device, dtype=dtype, batch_size=n, **kwargs)
    load_s = time.perf_counter() - start
    prompts, images, metadata = _inputs(n)
    reward(prompts[:2], images[:2], metadata[:2])  # warm-up

    def batched_call():
        reward(prompts, images, metadata)
        _sync(device)

    def single_calls():
        for p, im, m in zip(prompts, images, metadata):
            reward([p], [im], [m])
        _sync(device)

    batched, single = _median_seconds(batched_call, repeats), _median_seconds(single_calls, repeats)
    scores = reward(prompts, images, metadata)
    row = {
        "reward": name, "n_images": n, "load_s": round(load_s, 3),
        "batched_img_per_s": round(n / batched, 1), "one_by_one_img_per_s": round(n / single, 1),
        "speedup": round(single / batched, 2), "all_finite": all(math.isfinite(s) for s in scores),
        "threads": torch.get_num_threads(), "device": device, "dtype": dtype,
    }
    if compare_cpu:  # the same checkpoint in float32 on the CPU: device placement and dtype handling
        reference = build_reward(name, device="cpu", dtype="float32", batch_size=n, **kwargs)(prompts, images, metadata)
        row["max_abs_diff_vs_cpu_fp32"] = float(np.max(np.abs(np.array(scores) - np.array(reference))))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=32, help="images per batched call (and one-by-one calls)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the median is reported")
    parser.add_argument("--rewards", nargs="+", default=list(REWARDS), choices=REWARDS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    parser.add_argument("--compare-cpu", action="store_true",
                        help="also score on the CPU in float32 and report the largest difference")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kwargs = tiny_reward_kwargs(Path(tmp))
        for name in args.rewards:
            row = benchmark(name, kwargs[name], args.n_images, args.repeats, args.device, args.dtype, args.compare_cpu)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n| reward | batched img/s | one-by-one img/s | speed-up |  ({args.n_images} images, 64 px, "
          f"{torch.get_num_threads()} threads, {args.device}, {args.dtype})")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['reward']} | {r['batched_img_per_s']} | {r['one_by_one_img_per_s']} | {r['speedup']}x |")


if __name__ == "__main__":
    main()
