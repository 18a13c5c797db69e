"""Bench plug-ins of the tasks, one module per task: ``tools.task_bench.<name>.run(seeds, quick, out_dir) -> dict``
with {"task", "seeds", "results", "targets": [{"target", "mean", "threshold", "met"}, ...]}; `pulsewire tasks
bench` imports them by task name and merges their results into one JSON (bench/results/tasks.json)."""
