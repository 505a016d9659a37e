"""`ridgeline validate`: the planner's predictions against a real transformer forward pass.

    transformer.py  decoder layers in PyTorch with random weights, shapes from a ModelSpec
    measure.py      decode-step and prefill times (CUDA graphs and eager; host clock on the CPU)
    predict.py      the same quantities from a profile and from datasheet peaks; errors
    output.py       validation.json, validation.md, validation.png
    cli.py          the command

Nothing here imports torch at module import time (the CLI parser imports cli.py).
"""
