"""Planning by an external language model: the paper's "plan from a separate LLM" comparison.

Any ``transformers`` causal LM (``AutoModelForCausalLM``; an instruct model with a chat template, or a
small planner trained in ShapeWorld) writes the plan from the same reasoning instruction, and the Janus
model draws from ``"{prompt}. {plan}"`` as usual (``generate_rollouts(..., external_plans=...)``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from t2i_r1.policy.janus import checkpoint_template, default_reasoning_template
from t2i_r1.utils.checkpoints import CheckpointSpec, check_checkpoint

PLANNER_CHECKPOINT = CheckpointSpec(
    expected="a causal language model directory (AutoModelForCausalLM) or hub id",
    what="the external planner (--planner)",
    release="any transformers causal LM, e.g. Qwen/Qwen2.5-7B-Instruct; t2i-r1 shapeworld planner writes a small one",
)


class ExternalPlanner:
    def __init__(self, model, tokenizer, reasoning_template: str | None = None, max_new_tokens: int = 128,
                 temperature: float = 1.0):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name_or_path = getattr(model, "name_or_path", None) or type(model).__name__
        self.template = reasoning_template or default_reasoning_template()
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, *, dtype: str = "float32", device: str = "cpu",
                        reasoning_template: str | Path | None = None, **kwargs) -> ExternalPlanner:
        """Load any causal LM; the reasoning instruction is ``reasoning_template``, else a ``reasoning.txt``
        saved beside the weights (as ShapeWorld planners and policies are), else the packaged one."""
        path_or_id = check_checkpoint(path_or_id, PLANNER_CHECKPOINT)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=getattr(torch, dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
        return cls(model, tokenizer, checkpoint_template(path_or_id, reasoning_template), **kwargs)

    def _prompt(self, prompt: str) -> str:
        text = self.template.replace("{prompt}", prompt.strip())
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        return text

    @torch.no_grad()
    def plan(self, prompts: list[str], num_samples: int = 1, seed: int = 0) -> list[str]:
        """``num_samples`` plans per prompt, grouped by prompt (B * G texts)."""
        torch.manual_seed(seed)
        texts = [self._prompt(p) for p in prompts for _ in range(num_samples)]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(self.model.device)
        out = self.model.generate(
            **inputs, do_sample=True, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
