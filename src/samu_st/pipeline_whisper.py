"""The Whisper rows of the grid (see :mod:`samu_st.pipeline_stages`): ``whisper``, the
configured checkpoint's translate task zero-shot, and ``whisper-samu-A``, the paper's method on
its encoder.

``whisper-samu-A`` has no step 1: its step 2 (stage ``distill-whisper``, folder
``<out>/distill-whisper``, beside the XLS-R ``distill``) reads the ``distill`` section with the
encoder replaced by the Whisper folder's encoder (``family: whisper``), and its step 3 reads the
``train_st`` section with that family in adapters mode (LNA-D on the decoder, as for
``samu-xlsr-A``). Both set ``whisper_input`` from ``pipeline.whisper.whisper_input`` and clear
the masking overrides of the sections (Whisper's encoder has no SpecAugment in our wrapper, and
no feature projection), which would otherwise be a ConfigError for the family.
"""

from __future__ import annotations

from pathlib import Path

from samu_st.config import to_dict
from samu_st.grid import SYSTEMS
from samu_st.packaged import PACKAGED
from samu_st.pipeline import Context, PipelineConfig, Stage

DISTILL_WHISPER = "distill-whisper"  # the stage and its folder under pipeline.out_dir
# EncoderConfig settings Whisper's encoder does not have (samu_st.models.encoder_presets)
_CLEARED = ("mask_time_prob", "mask_time_length", "mask_feature_prob", "feat_proj_dropout")


def whisper_inputs(cfg: PipelineConfig) -> tuple[str, ...]:
    """The Whisper folder, hashed by content (packaged:whisper-base: its source (package
    versions) is in the stages' fingerprints instead)."""
    model = cfg.whisper.model
    return () if not model or str(model).startswith(PACKAGED) else (str(model),)


def whisper_source(cfg: PipelineConfig) -> str | None:
    """``pipeline.whisper.model``, with the package versions for packaged:whisper-base (a new
    package version reruns what reads it)."""
    source = cfg.whisper.model
    if source and str(source).startswith(PACKAGED):
        from samu_st.models.whisper_convert import package_files

        source = f"{source} ({package_files().origin})"
    return source


def whisper_encoder_overrides(cfg: PipelineConfig, prefix: str) -> list[str]:
    """Overrides of a step section's encoder (``prefix``: ``encoder`` or ``model.encoder``)
    for the Whisper family."""
    over = [f"{prefix}.family=whisper", f"{prefix}.whisper_input={cfg.whisper.whisper_input}"]
    return over + [f"{prefix}.{name}=null" for name in _CLEARED]


def stage_distill_whisper(ctx: Context) -> Path:
    from samu_st.models.whisper_convert import resolve_whisper_path
    from samu_st.pipeline_stages import asr_manifest_overrides, step_config
    from samu_st.steps.distill import DistillConfig, run_distill

    folder = resolve_whisper_path(str(ctx.cfg.whisper.model))
    over = [f"out_dir={ctx.out(DISTILL_WHISPER)}", f"encoder.pretrained={folder}"]
    over += whisper_encoder_overrides(ctx.cfg, "encoder")
    over += asr_manifest_overrides(ctx.cfg, "distill")
    cfg = step_config(DistillConfig, ctx.cfg, "distill", over)
    return run_distill(cfg, resume=True) / "encoder"


def distill_whisper_stage(cfg: PipelineConfig, section: dict[str, object],
                          inputs: tuple[str, ...]) -> Stage:  # fmt: skip
    """Step 2 on Whisper's encoder; ``section``: the ``distill`` section, ``inputs``: what it
    reads besides the Whisper folder (teacher, transcribed speech)."""
    fingerprint = {"section": section, "asr_data": cfg.asr_data, "whisper": whisper_source(cfg),
                   "whisper_input": cfg.whisper.whisper_input}  # fmt: skip
    return Stage(DISTILL_WHISPER, ("corpus",), stage_distill_whisper,
                 "step 2: SAMU semantic distillation of Whisper's encoder", fingerprint,
                 collective=True, inputs=(*whisper_inputs(cfg), *inputs))  # fmt: skip


def whisper_eval_stage(cfg: PipelineConfig) -> Stage:
    """``eval:whisper``: the configured Whisper checkpoint on the corpus, nothing trained."""
    from samu_st.pipeline_stages import make_stage_eval

    # whisper_input is whisper-samu-A's (left out: the zero-shot row does not read it)
    row = {k: v for k, v in to_dict(cfg.whisper).items() if k != "whisper_input"}
    fingerprint = {"split": cfg.eval_split, "max": cfg.max_eval_utterances, "whisper": row,
                   "source": whisper_source(cfg)}  # fmt: skip
    what = f"evaluate Whisper ({cfg.whisper.model}) zero-shot on {cfg.eval_split}"
    return Stage("eval:whisper", ("corpus",), make_stage_eval(SYSTEMS["whisper"]), what,
                 fingerprint, inputs=whisper_inputs(cfg))  # fmt: skip
