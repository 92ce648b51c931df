"""``samu-st pipeline CONFIG`` (the experiment grid) and ``samu-st demo`` (the main job)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

from samu_st.atomic import atomic_write
from samu_st.errors import ConfigError
from samu_st.resources import resource_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run the paper's experiment grid (resumable)")
    p.add_argument("config", help="YAML with a `pipeline:` section")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the pipeline section")
    p.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="NAME",
        help="run only these stages or systems (and what they need)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate config and paths, print the plan; run nothing",
    )
    p.set_defaults(func=cmd_pipeline)

    d = sub.add_parser("demo", help="all three steps + baseline on mini-CoVoST, end to end")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--config", default=None, help="pipeline YAML (default: the packaged demo)")
    d.add_argument(
        "--pretrain",
        action="store_true",
        help="run step 1 (wav2vec2 SSL) and the MBART text pretraining in the demo (the "
        "`pretrain` and `pretrain_text` sections) instead of starting from the shipped "
        "mini-XLS-R / mini-MBART-50; `samu-st release` rebuilds those themselves",
    )
    d.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="systems trained side by side, one thread each, after their shared stages; a "
        "finished branch's threads go to those still running (default: 2 on a machine with 2 "
        "or more cores; 1: one after the other)",
    )
    d.add_argument("overrides", nargs="*", help="key=value overrides of the pipeline section")
    d.set_defaults(func=cmd_demo)


def _run(cfg_path: str | Path, overrides: list[str], only: tuple[str, ...], dry: bool) -> int:
    from samu_st.pipeline import Context, execute, load_pipeline_config, select
    from samu_st.pipeline_stages import build_stages
    from samu_st.plan import dry_run

    cfg = load_pipeline_config(cfg_path, overrides)
    if dry:
        text, problems = dry_run(cfg)
        print(text)
        for problem in problems:
            print(f"MISSING {problem.where}: {problem.message}", file=sys.stderr)
        return 1 if problems else 0
    stages = select(build_stages(cfg), only)
    execute(stages, Context(cfg, Path(cfg.out_dir)), progress=lambda s: print(s, flush=True))
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    return _run(args.config, list(args.overrides), tuple(args.only), args.dry_run)


def cmd_demo(args: argparse.Namespace) -> int:
    from samu_st.branches import run_branches
    from samu_st.pipeline import Context, execute, is_main_process, load_pipeline_config
    from samu_st.pipeline_stages import build_stages

    start = time.perf_counter()
    out = Path(args.out)
    config = str(args.config or resource_path("demo.yaml"))
    overrides = [f"out_dir={out}", f"corpus.path={out / 'mini-covost'}"]
    if args.config is None:  # the packaged step sections and demo corpus
        overrides += [
            f"steps={resource_path('mini.yaml')}",
            f"corpus.mini_config={resource_path('mini-covost-demo.yaml')}",
        ]
    if args.pretrain:
        overrides += ["encoder_pretrained=null", "decoder_pretrained=null"]
    overrides += args.overrides
    cfg = load_pipeline_config(config, overrides)
    if not Path(cfg.steps).is_file():
        raise ConfigError(f"{cfg.steps}: steps config not found")
    stages, ctx = build_stages(cfg), Context(cfg, out)
    say = lambda s: print(s, flush=True)  # noqa: E731
    if args.jobs > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        outputs = run_branches(stages, ctx, cfg.systems, ["pipeline", config, *overrides], say)
    else:
        outputs = execute(stages, ctx, say)
    if not is_main_process():
        return 0  # under torchrun/accelerate launch the main process writes and prints
    report = outputs["report"]
    for source, name in (("report.md", "results.md"), ("report.json",) * 2, ("report.png",) * 2):
        atomic_write(out / name, partial(shutil.copyfile, report / source), point="summary")
    print()
    print((out / "results.md").read_text(encoding="utf-8"))
    minutes = (time.perf_counter() - start) / 60
    print(
        f"demo finished in {minutes:.1f} min; results: {out / 'results.md'}, "
        f"{out / 'report.json'}, plots: {out / 'report.png'}"
    )
    return 0
