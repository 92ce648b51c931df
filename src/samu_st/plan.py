"""``samu-st pipeline CONFIG --dry-run``: validate every path the grid will read, print the
plan with parameter counts, and estimate GPU-hours — without running anything.

The estimate counts ``k · N · frames`` FLOPs per update (``k`` = 6 when the encoder
trains, 4 when it is frozen and only adapters/decoder parts need weight gradients), with
``N`` the translator's parameters, 50 encoder frames per second of audio, and the seconds of
audio of one update over all GPUs (``data.update_duration``, or ``max_duration`` ×
``grad_accum`` × ``estimate.gpus`` where that is unset: then every GPU takes a full batch);
divided by ``peak_tflops × mfu`` of one GPU, so it is GPU-hours summed over the GPUs. It is a
planning number, not a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from samu_st.config import load_yaml
from samu_st.errors import ConfigError, ModelLoadError
from samu_st.grid import systems_for
from samu_st.models.packaged_teachers import packaged_teacher
from samu_st.packaged import PACKAGED
from samu_st.pipeline import PipelineConfig, Stage
from samu_st.pipeline_stages import asr_manifests, build_stages, corpus_dir

FRAMES_PER_SECOND = 50.0  # wav2vec2 / XLS-R: one frame per 20 ms


@dataclass(frozen=True)
class Problem:
    """One thing that would make the pipeline fail."""

    where: str  # config key or stage
    message: str


def check_folder(path: str, kind: str, needs: tuple[str, ...]) -> str | None:
    """None when ``path`` is a folder holding ``needs`` (any weights file for "weights")."""
    folder = Path(path)
    if not folder.is_dir():
        return f"{path}: folder does not exist (expected a local copy of the {kind})"
    missing = []
    for name in needs:
        if name == "weights":
            if not any(
                (folder / w).is_file()
                for w in (
                    "model.safetensors",
                    "model.safetensors.index.json",
                    "pytorch_model.bin",
                    "pytorch_model.bin.index.json",
                )
            ):
                missing.append("model.safetensors (or pytorch_model.bin)")
        elif not (folder / name).exists():
            missing.append(name)
    if missing:
        return f"{path}: not a {kind} folder, missing {', '.join(missing)}"
    if "config.json" in needs:
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, json.JSONDecodeError) as err:
            return f"{path}/config.json: unreadable ({err})"
        # a speech encoder of any family (models/encoder_families.py; the steps' encoder.family
        # says which, and loading checks that it matches)
        encoders = ("wav2vec2", "hubert", "wavlm", "wav2vec2-bert", "whisper")
        expected = {"wav2vec2 encoder": encoders, "MBART model": ("mbart",), "text teacher": None}
        want = expected.get(kind)
        if want is not None and model_type not in want:
            return f"{path}/config.json: model_type is {model_type!r}, expected {want[0]!r}"
    return None


def transformer_folder(folder: Path) -> Path:
    """Where a sentence-transformers folder keeps its transformer: the root, or the
    ``0_Transformer``-style subfolder that ``modules.json`` names."""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        first = str(modules[0].get("path", ""))
    except (OSError, json.JSONDecodeError, IndexError, KeyError, AttributeError, TypeError):
        return folder
    return folder / first if first and (folder / first / "config.json").is_file() else folder


def check_paths(cfg: PipelineConfig) -> list[Problem]:
    """Every input path of the grid, checked for the format it must have."""
    problems: list[Problem] = []
    steps = Path(cfg.steps)
    if not steps.is_file():
        return [Problem("steps", f"{steps}: steps config file not found")]
    checks = [
        (
            "encoder_pretrained",
            cfg.encoder_pretrained,
            "wav2vec2 encoder",
            ("config.json", "weights"),
        ),
        (
            "decoder_pretrained",
            cfg.decoder_pretrained,
            "MBART model",
            ("config.json", "weights", "tokenizer_config.json"),
        ),
        (
            "mt_pretrained",
            cfg.mt_pretrained,
            "MBART model",
            ("config.json", "weights", "tokenizer_config.json"),
        ),
    ]
    whisper = cfg.whisper.model  # packaged:whisper-base: its packages are checked by the stage
    if whisper and not whisper.startswith(PACKAGED):
        checks.append(("whisper.model", whisper, "Whisper model",
                       ("config.json", "weights", "tokenizer_config.json")))  # fmt: skip
    teacher = load_yaml(steps).get("distill", {}).get("teacher", {}) or {}
    if isinstance(teacher, dict) and str(teacher.get("path")).startswith(PACKAGED):
        try:  # a packaged teacher: its package is a dependency, its folder built on first use
            packaged_teacher(teacher["path"])
        except ModelLoadError as err:
            problems.append(Problem("distill.teacher.path", str(err)))
    elif isinstance(teacher, dict) and teacher.get("path"):
        checks.append(
            (
                "distill.teacher.path",
                teacher["path"],
                "text teacher",
                ("config.json", "weights", "tokenizer_config.json"),
            )
        )
    for key, path, kind, needs in checks:
        if kind == "text teacher" and path is not None:
            path = str(transformer_folder(Path(path)))
        if path is not None and (msg := check_folder(str(path), kind, needs)):
            problems.append(Problem(key, msg))
    problems += check_asr_data(cfg)
    if cfg.corpus.kind == "manifests":
        folder = corpus_dir(cfg)
        for split in ("train", "dev", cfg.eval_split):
            if not any((folder / split).glob("*.jsonl")):
                problems.append(
                    Problem(
                        "corpus.path",
                        f"{folder}/{split}: no <lang>.jsonl "
                        "manifests (run `samu-st prepare covost2 ...`)",
                    )
                )
    return problems


def check_asr_data(cfg: PipelineConfig) -> list[Problem]:
    """The transcribed speech step 2 and the CTC baseline read (``pipeline.asr_data``)."""
    if cfg.asr_data != "section":
        return []
    needed = {s.encoder_init for s in systems_for(cfg.systems)}
    problems = []
    for section, init in (("distill", "samu"), ("train_ctc", "ctc")):
        if init not in needed:
            continue
        for entry in asr_manifests(cfg, section):
            path = Path(entry)
            if not path.exists():
                problems.append(Problem(
                    f"{section}.data.manifests",
                    f"{path}: not found (transcribed speech, e.g. `samu-st prepare "
                    "commonvoice ...`; pipeline.asr_data is `section`)",
                ))  # fmt: skip
            elif path.is_dir() and not any(path.rglob("*.jsonl")):
                problems.append(Problem(f"{section}.data.manifests", f"{path}: no .jsonl"))
        problems += _check_dev(cfg, section)
    return problems


def _check_dev(cfg: PipelineConfig, section: str) -> list[Problem]:
    """A `dev:` of folders must find their `<split>/` manifests (an import from validated.tsv
    alone has only train/)."""
    from samu_st.pipeline_stages import steps_data

    dev = steps_data(cfg).get(section, {}).get("dev")
    if not isinstance(dev, dict):
        return []
    split = str(dev.get("split", "train"))
    return [
        Problem(f"{section}.dev.manifests", f"{m}/{split}: no <lang>.jsonl manifests")
        for m in map(Path, dev.get("manifests", ()))
        if m.is_dir() and not any((m / split).glob("*.jsonl")) and not any(m.glob("*.jsonl"))
    ]


def stage_reads(cfg: PipelineConfig, stage: Stage) -> str:
    """What a training stage reads, for the plan (the data sources are the silent part)."""
    section = {"distill": "distill", "distill-whisper": "distill", "ctc": "train_ctc"}.get(
        stage.name
    )
    if section is not None:
        return ", ".join(asr_manifests(cfg, section))
    if stage.name.startswith("st:") or stage.name in ("pretrain_text", "mt"):
        return str(corpus_dir(cfg))
    return ""


def translator_counts(cfg: PipelineConfig) -> dict[str, tuple[int, int]]:
    """(total, trainable) parameters of the step-3 model in each encoder mode, on ``meta``."""
    from samu_st.models.summary import summarize_config
    from samu_st.pipeline_stages import step_config
    from samu_st.steps.train_st import TrainSTConfig

    counts = {}
    for mode in ("adapters", "full"):
        over = [f"out_dir={cfg.out_dir}", f"model.encoder.mode={mode}"]
        if cfg.encoder_pretrained:
            over.append(f"model.encoder.pretrained={cfg.encoder_pretrained}")
        if cfg.decoder_pretrained:
            over.append(f"model.decoder.pretrained={cfg.decoder_pretrained}")
        summary = summarize_config(step_config(TrainSTConfig, cfg, "train_st", over).model)
        counts[mode] = (summary.total, summary.trainable)
    return counts


def gpu_hours(cfg: PipelineConfig, stage: Stage, params: int, frozen_encoder: bool) -> float:
    """Planning estimate of one training stage's GPU-hours (see the module docstring)."""
    section = stage.fingerprint.get("section", stage.fingerprint)
    train = section.get("train", {}) if isinstance(section, dict) else {}
    data = section.get("data", {}) if isinstance(section, dict) else {}
    steps = int(train.get("max_steps", 1000))
    audio = update_seconds(data, int(train.get("grad_accum", 1)), cfg.estimate.gpus)
    flops = (4 if frozen_encoder else 6) * params * FRAMES_PER_SECOND * audio * steps
    return flops / (cfg.estimate.peak_tflops * 1e12 * cfg.estimate.mfu) / 3600


def update_seconds(data: dict[str, object], grad_accum: int, gpus: int) -> float:
    """Seconds of speech per update over all ``gpus``: ``data.update_duration`` when set
    (divided among the GPUs), else ``max_duration`` × ``grad_accum`` on each GPU."""
    update = float(str(data.get("update_duration", 0.0) or 0.0))
    if update > 0:
        return update
    return float(str(data.get("max_duration", 60.0))) * grad_accum * gpus


def dry_run(cfg: PipelineConfig) -> tuple[str, list[Problem]]:
    """The plan as text, and the problems found (empty: the grid can run)."""
    problems = check_paths(cfg)
    lines = [f"pipeline → {cfg.out_dir}", f"steps file: {cfg.steps}", ""]
    try:
        stages = build_stages(cfg)
    except (ConfigError, ModelLoadError) as err:
        return "\n".join(lines), [*problems, Problem("stages", str(err))]
    counts: dict[str, tuple[int, int]] = {}
    try:  # from the architectures where the folders are missing (nothing is allocated)
        counts = translator_counts(cfg)
    except (ConfigError, ModelLoadError) as err:
        problems.append(Problem("train_st", str(err)))
    total_hours = 0.0
    for i, stage in enumerate(stages, 1):
        line = f"{i:2d}. {stage.name:<22} {stage.describe}"
        # (the counts are XLS-R's: none for whisper-samu-A, whose encoder is Whisper's)
        if stage.name.startswith("st:") and counts and "family" not in stage.fingerprint["system"]:
            mode = stage.fingerprint["system"]["encoder_mode"]
            total, trainable = counts[mode]
            hours = gpu_hours(cfg, stage, total, mode == "adapters")
            total_hours += hours
            line += (
                f"  [{total / 1e6:.1f}M params, {trainable / 1e6:.1f}M trainable,"
                f" ~{hours:.1f} GPU-h]"
            )
        if reads := stage_reads(cfg, stage):
            line += f"\n      reads {reads}"
        lines.append(line)
    lines += [
        "",
        f"step-3 training estimate: ~{total_hours:.1f} GPU-hours at "
        f"{cfg.estimate.peak_tflops:.0f} TFLOP/s × MFU {cfg.estimate.mfu:.2f} "
        "(steps 1-2, CTC and evaluation not included)",
    ]
    return "\n".join(lines), problems
