"""Work counts (FLOPs, bytes) of the kernels the probes time and the planner prices: pure Python."""
