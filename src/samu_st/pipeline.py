"""The experiment grid as a resumable pipeline of stages.

Stages: ``corpus`` → ``pretrain`` (step 1, skipped when a pretrained encoder folder is given)
→ ``distill`` (step 2) / ``ctc`` (the ctc-xlsr ablation and the cascade's ASR) →
``pretrain_text`` (a small MBART, skipped when an MBART folder is given) → ``mt`` (cascade MT)
→ ``st:<system>`` (step 3 per system) → ``eval:<system>`` → ``report``. The Whisper rows
(:mod:`samu_st.pipeline_whisper`) add ``eval:whisper`` and, for ``whisper-samu-A``,
``distill-whisper`` (step 2 on Whisper's encoder).

Each finished stage writes ``<out>/stages/<name>.json`` holding its output path and a hash of
everything it was built from; a second run reuses it when the hash matches and re-runs it (and
what depends on it) otherwise. A stage that was interrupted resumes from its last checkpoint,
because every training step is run with ``resume=True`` (exact resume, see
:mod:`samu_st.training.loop`): ``<name>.started.json`` records the hash a stage started with,
and a training stage's folder written under another hash (a changed config or changed inputs)
is moved aside to ``<folder>.replaced-<time>`` instead of being resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from samu_st.atomic import write_text_atomic
from samu_st.config import apply_overrides, from_dict, load_yaml, to_dict
from samu_st.content_id import DigestCache, identities
from samu_st.errors import ConfigError, SamuError
from samu_st.grid import (
    PAPER_TABLES,
    TABLES,
    TRAINED_SYSTEMS,
    WHISPER_SYSTEMS,
    System,
    systems_for,
)
from samu_st.packaged import PACKAGED, WHISPER_BASE, resolve_model_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CorpusConfig:
    """Where the manifests come from."""

    kind: Literal["mini", "manifests"] = "mini"  # mini: synthesise mini-CoVoST; manifests: given
    path: str = "runs/demo/mini-covost"  # corpus folder: <split>/<lang>.jsonl (+ unlabeled.jsonl)
    mini_config: str | None = None  # YAML of MiniCovostConfig for kind=mini (None: defaults)
    unlabeled: tuple[str, ...] = ()  # SSL manifests; empty: <path>/unlabeled.jsonl, else train


@dataclass(frozen=True)
class GpuEstimateConfig:
    """The --dry-run estimate of GPU-hours: 6·N·tokens FLOPs at an assumed utilisation."""

    peak_tflops: float = 312.0  # bf16 dense peak of the GPU (A100: 312; H100 SXM: 989)
    mfu: float = 0.35  # assumed model FLOP utilisation
    # GPUs of the job: an update is data.update_duration seconds over all of them, or, where a
    # step leaves that unset, max_duration × grad_accum on EACH of them.
    gpus: int = 8

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.peak_tflops <= 0 or not 0 < self.mfu <= 1:
            raise ConfigError("pipeline.estimate: gpus >= 1, peak_tflops > 0, 0 < mfu <= 1")


@dataclass(frozen=True)
class WhisperSystemConfig:
    """The ``whisper`` row: a Whisper checkpoint's X→EN translate task, zero-shot, on the
    evaluation split of the grid (:mod:`samu_st.whisper_eval`)."""

    # Whisper folder (save_pretrained layout, e.g. openai/whisper-large-v2 as downloaded) or
    # packaged:whisper-base (needs the `whisper` extra); None: no whisper row
    model: str | None = None
    num_beams: int = 5  # beam size (the Whisper paper's: 5)
    max_batch_size: int = 8  # clips per batch (each is one 30 s encoder window)
    max_new_tokens: int = 200  # tokens generated after the 4-token prompt (at most 443)
    # whisper-samu-A: how its encoder reads clips in steps 2-3 (encoder.whisper_input: pad-30s,
    # the 30-s window Whisper was trained on; trim: the batch's longest clip, faster)
    whisper_input: Literal["pad-30s", "trim"] = "pad-30s"

    def __post_init__(self) -> None:
        if min(self.num_beams, self.max_batch_size, self.max_new_tokens) < 1:
            raise ConfigError("pipeline.whisper: num_beams, max_batch_size and max_new_tokens "
                              "must be >= 1")  # fmt: skip
        if self.model and self.model.startswith(PACKAGED) and self.model != WHISPER_BASE:
            raise ConfigError(f"pipeline.whisper.model: {self.model}: unknown (packaged: "
                              f"{WHISPER_BASE}; or a local Whisper folder)")  # fmt: skip


@dataclass(frozen=True)
class PipelineConfig:
    """The experiment grid: which systems to build from which corpus and step configs."""

    out_dir: str = "runs/grid"  # every stage writes below this folder
    steps: str = "configs/mini.yaml"  # YAML with the step sections (pretrain, distill, ...)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    # rows to build (samu_st.grid.SYSTEMS); `whisper` is added when whisper.model is set
    # (`whisper-samu-A`, Whisper's encoder through steps 2-3, needs it too)
    systems: tuple[str, ...] = TRAINED_SYSTEMS
    # tables of the report (samu_st.grid.TABLES); `whisper` is added when whisper.model is set
    tables: tuple[str, ...] = PAPER_TABLES
    encoder_pretrained: str | None = None  # local XLS-R folder: skips step 1 (the paper's case)
    decoder_pretrained: str | None = None  # local MBART folder: skips text pretraining
    mt_pretrained: str | None = None  # local MBART MT folder for the cascade (paper: MBART-50)
    eval_split: str = "test"  # split the tables are computed on
    beam: int = 5  # beam size of the evaluation
    # Beam search implementation: samu (samu_st.decoding.beam: same hypotheses as transformers'
    # generate(), measured 1.1-1.4x faster on CPU) or generate.
    engine: Literal["generate", "samu"] = "samu"
    max_eval_utterances: int = 0  # per language; 0 = all
    seed: int = 1  # seed of every step (overrides the steps file)
    # Transcribed speech of step 2 (distill) and of the CTC baseline / cascade ASR (train_ctc):
    # `section`: the manifests their own sections list (the paper: Common Voice 8, 53
    # languages, not the ST corpus); `corpus`: the ST corpus above (the mini path, whose
    # transcribed speech IS the ST corpus). Either way the dry run checks the paths.
    asr_data: Literal["corpus", "section"] = "corpus"
    estimate: GpuEstimateConfig = field(default_factory=GpuEstimateConfig)
    # `key=value` overrides of the step sections (first key a section name, e.g.
    # `train_st.train.max_steps=3`), applied wherever a stage reads its section (and hashed).
    step_overrides: tuple[str, ...] = ()
    whisper: WhisperSystemConfig = field(default_factory=WhisperSystemConfig)

    def __post_init__(self) -> None:
        # `packaged:<name>` names a checkpoint shipped in the package (samu_st.packaged)
        for name in ("encoder_pretrained", "decoder_pretrained", "mt_pretrained"):
            object.__setattr__(self, name, resolve_model_path(getattr(self, name)))
        try:
            systems_for(self.systems)
        except KeyError as err:
            raise ConfigError(f"pipeline.systems: {err.args[0]}") from None
        if self.whisper.model is not None:  # the row and its table, whatever the lists say
            for key in ("systems", "tables"):
                if "whisper" not in getattr(self, key):
                    object.__setattr__(self, key, (*getattr(self, key), "whisper"))
        needing = [s for s in self.systems if s in WHISPER_SYSTEMS]
        if needing and self.whisper.model is None:
            names = " and ".join(f"`{n}`" for n in needing)
            raise ConfigError(f"pipeline.systems: {names} needs pipeline.whisper.model (a "
                              f"Whisper folder or {WHISPER_BASE})")  # fmt: skip
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown:
            raise ConfigError(f"pipeline.tables: unknown {unknown}; valid: {sorted(TABLES)}")


# The sections of a steps file a pipeline stage reads (see samu_st.pipeline_stages).
STEP_SECTIONS = ("pretrain", "distill", "train_ctc", "pretrain_text", "train_mt", "train_st")


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(pipeline, steps)``: overrides whose first key names a step section go to the steps
    (``train_st.train.max_steps=3``); ``pipeline.`` prefixes are accepted and dropped."""
    own: list[str] = []
    steps: list[str] = []
    for text in overrides:
        head = text.split("=", 1)[0].split(".", 1)[0].strip()
        if head in STEP_SECTIONS:
            steps.append(text)
        else:
            own.append(text.removeprefix("pipeline."))
    return own, steps


def load_pipeline_config(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """The ``pipeline:`` section of ``path`` (or the whole file when it has none), with
    ``overrides`` of the pipeline section or (first key a step section) of the steps."""
    data = load_yaml(path)
    section = data.get("pipeline", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}:pipeline: expected a mapping")
    where = f"{path}:pipeline" if "pipeline" in data else str(path)
    own, steps = split_overrides(overrides)
    raw = apply_overrides(dict(section), own)
    if steps:
        raw["step_overrides"] = [*raw.get("step_overrides", ()), *steps]
    return from_dict(PipelineConfig, raw, where=where)


@dataclass
class Stage:
    """One unit of work; ``run`` returns its output folder."""

    name: str
    deps: tuple[str, ...]
    run: Callable[[Context], Path]
    describe: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    # True for training stages: under `accelerate launch`/`torchrun` every process runs them
    # (data-parallel). Other stages (corpus, evaluation, report) run on the main process only.
    collective: bool = False
    # Files/folders from outside the pipeline this stage reads (checkpoints, manifests, the
    # teacher): hashed by content into the stage's key, so a replacement at the same path
    # reruns it (see samu_st.content_id).
    inputs: tuple[str, ...] = ()


@dataclass
class Context:
    """What stages read: the config and the outputs of the stages already done."""

    cfg: PipelineConfig
    root: Path
    outputs: dict[str, Path] = field(default_factory=dict)

    def out(self, stage: str) -> Path:
        return self.root / stage.replace(":", "/")


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _marker(root: Path, name: str, kind: str = "") -> Path:
    """``stages/<name>.json`` (finished) or ``stages/<name>.started.json`` (kind "started")."""
    suffix = f".{kind}.json" if kind else ".json"
    return root / "stages" / f"{name.replace(':', '__')}{suffix}"


def _write_marker(path: Path, data: dict[str, Any]) -> None:
    point = "stage-started" if path.name.endswith(".started.json") else "stage-finished"
    write_text_atomic(path, json.dumps(data, indent=2), point=point)


def _done(root: Path, stage: Stage, key: str) -> Path | None:
    marker = _marker(root, stage.name)
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    output = Path(data.get("output", ""))
    if data.get("key") != key or not output.exists():
        return None
    return output


def _started_key(root: Path, name: str) -> str | None:
    try:
        key = json.loads(_marker(root, name, "started").read_text(encoding="utf-8")).get("key")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return key if isinstance(key, str) else None


def _set_aside_stale(root: Path, folder: Path, name: str, key: str) -> Path | None:
    """Move ``folder`` aside when it was written for another configuration of stage ``name`` (or
    by an unknown run), so that the step's ``resume=True`` cannot continue, or return as
    finished, a training of the old configuration. Nothing is deleted; returns the new place."""
    if _started_key(root, name) == key or not folder.is_dir() or not any(folder.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        aside = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
        n += 1
    os.replace(folder, aside)
    return aside


def select(stages: list[Stage], only: Sequence[str]) -> list[Stage]:
    """The stages needed for ``only`` (names, system names, or prefixes like ``st``)."""
    if not only:
        return stages
    by_name = {s.name: s for s in stages}
    wanted: set[str] = set()
    for item in only:
        hits = [s.name for s in stages if item in (s.name, s.name.split(":", 1)[-1])]
        hits += [s.name for s in stages if s.name.split(":", 1)[0] == item]
        if not hits:
            raise ConfigError(f"--only {item}: no such stage or system; stages: "
                              + " ".join(s.name for s in stages))  # fmt: skip
        wanted.update(hits)
    todo = list(wanted)
    while todo:
        for dep in by_name[todo.pop()].deps:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [s for s in stages if s.name in wanted]


def is_main_process() -> bool:
    """True unless ``torchrun``/``accelerate launch`` made this a process of rank > 0."""
    return int(os.environ.get("RANK", "0")) == 0


class _Processes:
    """The processes of one ``accelerate launch``/``torchrun`` job running the pipeline (one
    process when neither set ``WORLD_SIZE``). The main process alone writes markers, moves stale
    folders and runs the non-collective stages; the others wait for its finished marker."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.main = is_main_process()
        self._state: Any = None
        if self.world > 1:
            import torch
            from accelerate import PartialState

            # the process group the training steps will use (gloo on CPU, nccl on GPUs)
            self._state = PartialState(cpu=not torch.cuda.is_available())

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()


def _wait_for_main(root: Path, stage: Stage, key: str, poll_s: float = 2.0) -> Path:
    """The output of a stage the main process runs, once its finished marker appears (an
    evaluation may outlast a collective barrier's timeout, so this polls the file; a failing
    main process ends the whole job through the launcher)."""
    while (done := _done(root, stage, key)) is None:
        time.sleep(poll_s)
    return done


def execute(
    stages: list[Stage],
    ctx: Context,
    progress: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Run the stages in order, reusing finished ones; returns every stage's output.

    Under ``accelerate launch``/``torchrun`` (several processes, one shared ``out_dir``) every
    process calls this: training stages run on all of them, the rest on the main process."""
    procs = _Processes()
    say = progress if procs.main else (lambda _text: None)
    keys: dict[str, str] = {}
    rerun: set[str] = set()
    total = len(stages)
    # beside stages/, whose *.json files are the stage markers
    digests = DigestCache(ctx.root / "input-digests.json", writable=procs.main)
    for i, stage in enumerate(stages, start=1):
        inputs = identities(stage.inputs, digests)
        digests.save()
        key = _hash([stage.fingerprint, [keys.get(d) for d in stage.deps], inputs])
        keys[stage.name] = key
        procs.barrier()  # every process is done with the previous stage ...
        done = None if rerun & set(stage.deps) else _done(ctx.root, stage, key)
        procs.barrier()  # ... and has read the markers before the main process changes them
        if done is not None:
            ctx.outputs[stage.name] = done
            say(f"[{i}/{total}] {stage.name}: done earlier ({done})")
            continue
        rerun.add(stage.name)
        say(f"[{i}/{total}] {stage.name}: {stage.describe}")
        if procs.main:
            # training stages resume from their folder; evaluations and reports are rewritten
            aside = (
                _set_aside_stale(ctx.root, ctx.out(stage.name), stage.name, key)
                if stage.collective
                else None
            )
            if aside is not None:
                say(
                    f"[{i}/{total}] {stage.name}: {ctx.out(stage.name)} was built with another "
                    f"configuration (or its inputs changed); moved to {aside} (delete it when "
                    "done)"
                )
            _marker(ctx.root, stage.name).unlink(missing_ok=True)
            _write_marker(
                _marker(ctx.root, stage.name, "started"),
                {"stage": stage.name, "key": key},
            )
        procs.barrier()
        start = time.perf_counter()
        if procs.main or stage.collective:
            output = stage.run(ctx)
        else:
            output = _wait_for_main(ctx.root, stage, key)
        seconds = time.perf_counter() - start
        ctx.outputs[stage.name] = output
        if procs.main:
            _write_marker(
                _marker(ctx.root, stage.name),
                {"stage": stage.name, "key": key, "output": str(output), "seconds": seconds,
                 "inputs": inputs},
            )  # fmt: skip
        say(f"[{i}/{total}] {stage.name}: finished in {seconds:.0f} s → {output}")
    return dict(ctx.outputs)


def describe_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The resolved pipeline config as plain data (for the plan and the report)."""
    return to_dict(cfg)


def systems(cfg: PipelineConfig) -> list[System]:
    return systems_for(cfg.systems)


class PipelineError(SamuError):
    """A pipeline that cannot run as configured (the message says what is missing)."""
