"""End-to-end workflows built from the stages: the main job (`demo`, also `python -m so3krates_lab`) and the
helpers the benchmarks and the speed notebook share (`benchmarking`)."""
