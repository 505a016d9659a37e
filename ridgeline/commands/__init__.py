"""One module per subcommand: `add_arguments(parser)` and `run(args) -> int`.

    devices.py    list the accelerators and the CPU           (ridgeline.device, .topology)
    profile.py    measure this device, write profile.json     (ridgeline.runner)
    report.py     render a profile as HTML/markdown           (ridgeline.reports.render)
    compare.py    a profile against a reference profile       (ridgeline.reports.compare)
    plan.py       size an LLM deployment from a profile       (ridgeline.sizing.plan_options)
    simulate.py   the latency-throughput curve of a replica   (ridgeline.sizing.simulation.run)
    validate.py   predicted against measured on a transformer (ridgeline.validation.run)

A command parses its flags, calls the package that does the work (in brackets)
and prints; ridgeline.cli imports each one lazily, so `ridgeline plan` never
imports torch.
"""
