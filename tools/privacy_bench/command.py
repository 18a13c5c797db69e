"""`pulsewire privacy-bench`: its flags, the worker processes that run seeds in parallel, and the files it
writes (privacy.json + privacy.md)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import tools.privacy_bench as bench_package
from tools.privacy_bench.parts import run_bench
from tools.privacy_bench.report import markdown
from tools.privacy_bench.settings import BenchSettings

log = logging.getLogger(__name__)


def add_parser(sub, add_data_args) -> None:
    p = sub.add_parser("privacy-bench", help="DS2 macro F1 against epsilon, secure-aggregation overhead over MQTT, "
                                             "attack x defence table -> privacy.json + privacy.md",
                       description=bench_package.__doc__.split("\n\n")[0])
    add_data_args(p)
    p.add_argument("--quick", action="store_true", help="2 rounds, a few cases: checks that everything runs")
    p.add_argument("--parts", nargs="+", choices=("dp", "attacks", "secagg", "accounting"),
                   default=["dp", "attacks", "secagg", "accounting"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the federated runs (the inter-patient split's validation patients, the devices' "
                        "order, the attackers, the DP noise); the report gives mean ± std over them (default: 0 1 2)")
    p.add_argument("--rounds", type=int, help="federated rounds per run (default 10; quick: 2)")
    p.add_argument("--out", default="out/bench", help="folder for privacy.json and privacy.md (the committed "
                                                      "bench/results only when asked for, as `make bench` does)")
    p.add_argument("--checkpoint", help="partial results, resumed from (default: out/privacy-bench/<name>.partial.json)")
    p.add_argument("--merge", nargs="+", metavar="JSON", default=[],
                   help="add the runs of other checkpoints (e.g. parts run in parallel) to --checkpoint first")
    p.add_argument("--report-only", action="store_true", help="run nothing: write the report of the checkpoint")
    p.add_argument("--note", help="a sentence for the report's header (e.g. how parallel parts were run)")
    p.add_argument("--jobs", type=int, default=1,
                   help="run the seeds in this many worker processes, one TensorFlow thread each, then merge (on 2 "
                        "cores two single-threaded workers finish about twice as many runs per hour as one process)")
    p.add_argument("--only", nargs="+", metavar="TEXT", help="run only the runs whose key contains one of these "
                                                            "(e.g. /0.1/ for the 10 %% attacker share)")


def run_command(args, data_dir: Path | None, cache_root: Path) -> int:
    import dataclasses
    import sys

    settings = BenchSettings.quick() if args.quick else BenchSettings()
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    name = "privacy-quick" if args.quick else "privacy"
    checkpoint = Path(args.checkpoint or f"out/privacy-bench/{name}.partial.json")
    started = time.time()
    argv = sys.argv[1:]
    if "--note" in argv:  # the note is printed on its own
        at = argv.index("--note")
        argv = argv[:at] + argv[at + 2:]
    command = " ".join(["pulsewire"] + argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(results: dict) -> None:
        from tools.privacy_bench.targets import privacy_targets

        results.update(command=command, wall_seconds=round(time.time() - started, 1), checkpoint=str(checkpoint),
                       note=args.note, targets=privacy_targets(results))
        (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
        (out / f"{name}.md").write_text(markdown(results, command))

    merge = list(args.merge)
    if args.jobs > 1 and len(args.seeds) > 1 and not args.report_only and set(args.parts) - {"secagg", "accounting"}:
        merge += run_workers(args, checkpoint)
    if merge:
        runs = json.loads(checkpoint.read_text())["runs"] if checkpoint.is_file() else {}
        for other in merge:
            runs.update({k: v for k, v in json.loads(Path(other).read_text())["runs"].items() if k not in runs})
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    results = run_bench(data_dir, cache_root, settings, checkpoint, tuple(args.parts), on_stage=write,
                        run=not args.report_only, only=tuple(args.only or ()), seeds=tuple(args.seeds))
    print(markdown(results, command))
    print(f"results: {out / (name + '.json')}, {out / (name + '.md')}")
    return 0


def worker_arguments(args, seed: int, part: Path) -> list[str]:
    """The command line of the worker for one seed: the parent's settings, that seed, its own checkpoint, and no
    secure-aggregation part (it has no seed; the parent runs it once)."""
    seeded = [p for p in args.parts if p not in ("secagg", "accounting")]
    argv = ["privacy-bench", "--parts", *seeded, "--seeds", str(seed),
            "--checkpoint", str(part), "--out", str(part.parent / f"seed{seed}")]
    argv += (["--quick"] if args.quick else []) + (["--rounds", str(args.rounds)] if args.rounds else [])
    argv += (["--only", *args.only] if args.only else [])
    return argv + (["--data-dir", str(args.data_dir)] if args.data_dir else [])


def run_workers(args, checkpoint: Path) -> list[str]:
    """Each seed's simulated runs in a worker process of its own (at most ``args.jobs`` at a time, one TensorFlow
    thread each: the tiny model's ops do not use a second core, a second process does). Every worker resumes
    from and writes to its own checkpoint; the secure-aggregation part is left to the parent. Returns the
    workers' checkpoints, for the parent to merge."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    pending, running, done = list(args.seeds), [], []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            part = checkpoint.with_name(f"{checkpoint.stem}.seed{seed}.json")
            cmd = [sys.executable, "-m", "tools.cli", *worker_arguments(args, seed, part)]
            part.parent.mkdir(parents=True, exist_ok=True)
            with open(part.with_suffix(".log"), "ab") as out:
                running.append((seed, part, subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)))
            log.info("seed %d: a worker started; progress in %s", seed, part.with_suffix(".log"))
        seed, part, proc = running[0]
        if proc.wait() != 0:
            log.warning("the worker for seed %d exited with %d; its finished runs are kept in %s, rerun to resume",
                        seed, proc.returncode, part)
        running.pop(0)
        if part.is_file():
            done.append(str(part))
    return done


def _json_default(x: Any) -> Any:
    return str(x)
