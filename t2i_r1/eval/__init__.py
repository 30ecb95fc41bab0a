"""Evaluation: benchmarks (T2I-CompBench, GenEval, WISE, ShapeWorld), extra metrics and the runner.

Benchmarks are registered by name and imported only when built (``build_benchmark(name, ...)``); each
implements ``t2i_r1.eval.base.Benchmark``. ``t2i_r1.eval.runner.run_eval`` (the ``t2i-r1 eval``
command) generates, scores and writes the results of any of them.
"""

from t2i_r1.eval.base import BENCHMARKS, Benchmark, Metric, PromptGroup, PromptItem, build_benchmark, register_benchmark

register_benchmark("t2i-compbench", "t2i_r1.eval.t2i_compbench:T2ICompBench")
register_benchmark("geneval", "t2i_r1.eval.geneval:GenEval")
register_benchmark("wise", "t2i_r1.eval.wise:WISE")
# Added by the small-world work: a module implementing the Benchmark protocol at this path.
register_benchmark("shapeworld", "t2i_r1.eval.shapeworld:ShapeWorldBenchmark")

__all__ = ["BENCHMARKS", "Benchmark", "Metric", "PromptGroup", "PromptItem", "build_benchmark", "register_benchmark"]
