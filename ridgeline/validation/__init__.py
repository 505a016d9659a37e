"""`ridgeline validate`: the planner's predictions against a real transformer forward pass.

    footprint.py    bytes of weights, KV cache and activations, from the spec (pure Python)
    transformer.py  decoder layers in PyTorch with random weights, shapes from a ModelSpec
    kernels.py      the fused Triton elementwise kernels those layers use on a GPU
    measure.py      decode-step and prefill times (CUDA graphs and eager; host clock on the CPU)
    predict.py      the same quantities from a profile and from datasheet peaks; errors
    output.py       validation.json, validation.md, validation.png (and reading one back)
    run.py          one run: prepare the inputs, measure every point, score, the document
    tp.py           --tp N: the layers sharded as engines shard them, one all-reduce after each
                    row-parallel GEMM, timed on N ranks (spawned, or under torchrun)

The command is ridgeline.commands.validate; run.py imports torch only when points are
measured (the CLI parser imports it).
"""
