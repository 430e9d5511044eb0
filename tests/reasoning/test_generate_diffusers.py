"""The `diffusers` backend with the real `LTXConditionPipeline`, `LTX2ConditionPipeline` and
`WanVACEPipeline` classes built from tiny randomly initialised components (the configurations of
diffusers' own pipeline tests; the T5 and Gemma tokenizers replaced by word-level ones built here,
since the hub is out of reach), saved to a folder
and loaded through the backend as a user's model would be — with the hub switched off and a socket
guard that fails the test on any connection off this machine. Random weights make no picture worth
looking at: what is checked is the plumbing — the conditioning frames reach the model, the frame grid,
progress per denoising step, a cancel that stops it, the written piece, and LTX-2's own sound."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexers import ingest
from indexers.captions import CaptionOptions
from indexers.pipeline import IngestOptions
from memory import Store
from reasoning.generate import Cancelled, EditRequest, Run, prepare, run_edit
from reasoning.generate.media import count_frames, grab
from tests.media import bbb_excerpt


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any connection to a host other than this machine fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"network access to {address} during a diffusers test")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


def tiny_text(words: list[str]) -> tuple[Any, Any]:
    """A word-level tokenizer of `words` and a tiny T5 encoder (32 wide) to go with it: what both
    tiny pipelines take in place of a T5 tokenizer the hub would have given."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(words), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0
    )
    return tokenizer, T5EncoderModel(config)


def tiny_ltx(folder: Path) -> Path:
    """A tiny LTX condition pipeline, saved like a downloaded one."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )

    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32,
    )  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )  # fmt: skip
    tokenizer, text_encoder = tiny_text(
        ["<pad>", "</s>", "<unk>", "a", "rabbit", "hops", "in", "the", "meadow", "keeps", "hopping"]
    )
    pipe = LTXConditionPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder, tokenizer=tokenizer,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path
) -> Iterator[tuple[Store, str, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("diffusers")
    clip = bbb_excerpt(root / "clip.mp4", 8, 160, 90)
    store = Store(root / "home")
    options = IngestOptions(library="d", captions=CaptionOptions(llm=None), look=None)
    vid = ingest(store, clip, options, cache_dir=model_cache).video_id
    model = tiny_ltx(root / "tiny-ltx")
    yield store, vid, {"diffusers": {"model": model, "steps": 2, "max_width": 64}}
    store.close()


def test_diffusers_renders_on_the_ltx_grid_with_progress(setup: Any, tmp_path: Path) -> None:
    store, vid, options = setup
    req = EditRequest(
        video_id=vid,
        operation="extend",
        anchor=4.0,
        duration=0.5,
        prompt="a rabbit hops",
        seed=1,
        backend="diffusers",
    )
    plan, backend = prepare(store, req, None, options)
    assert plan.frames == 9 and plan.fps == 24  # 0.5 s at 24 fps on 8k+1 is 9 (the least)
    steps: list[float] = []
    result = run_edit(store, plan, backend, tmp_path / "a", Run(steps.append))
    art = result["artifact"]
    assert art["pipeline"] == "LTXConditionPipeline" and art["model_frames"] == 9 and art["steps"] == 2
    assert art["model_size"] == [64, 32] and art["conditions"] == [{"frame_index": 0, "strength": 1.0}]
    assert count_frames(tmp_path / "a" / "insert.mp4") == plan.timeline_frames
    assert count_frames(tmp_path / "a" / "preview.mp4") == result["timeline"]["frames"]
    denoise = [p for p in steps if p <= 0.8]
    assert len(denoise) >= 2 and denoise == sorted(denoise) and steps[-1] == 1.0


def test_the_conditioning_frame_reaches_the_model(setup: Any, tmp_path: Path) -> None:
    """Same seed and prompt: the same conditioning frame gives the same piece; another frame, another."""
    store, vid, options = setup

    def piece(frame_time: float, name: str) -> np.ndarray:
        req = EditRequest(video_id=vid, operation="generate", anchor=4.0, duration=0.4, prompt="a rabbit", seed=5,
                          backend="diffusers", conditions=[{"time": frame_time, "position": 0}])  # fmt: skip
        plan, backend = prepare(store, req, None, options)
        run_edit(store, plan, backend, tmp_path / name)
        return grab(tmp_path / name / "insert.mp4", 0, plan.source.fps).astype(np.float64)

    a, again, other = piece(1.0, "a"), piece(1.0, "again"), piece(6.5, "other")
    assert np.abs(a - again).max() <= 2  # deterministic
    assert np.abs(a - other).mean() > 1.0  # the frame went in


def test_a_cancel_stops_the_denoising(setup: Any, tmp_path: Path) -> None:
    store, vid, options = setup
    req = EditRequest(
        video_id=vid, operation="generate", anchor=4.0, duration=0.4, prompt="a rabbit", backend="diffusers"
    )
    plan, backend = prepare(store, req, None, options)

    def stop(fraction: float) -> None:
        if fraction > 0:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        run_edit(store, plan, backend, tmp_path / "c", Run(stop))
    assert not (tmp_path / "c" / "insert.mp4").exists()


def test_without_a_model_folder_the_request_is_refused(setup: Any) -> None:
    from reasoning.generate import RequestError

    store, vid, _ = setup
    req = EditRequest(video_id=vid, operation="generate", anchor=4.0, prompt="a rabbit", backend="diffusers")
    with pytest.raises(RequestError, match="VIDMEM_DIFFUSERS_MODEL"):
        prepare(store, req, None, {"diffusers": {"model": None}})


def tiny_wan_vace(folder: Path) -> Path:
    """A tiny Wan VACE pipeline (diffusers' own test configuration), saved like a downloaded one."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanVACEPipeline,
        WanVACETransformer3DModel,
    )

    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    )  # fmt: skip
    tokenizer, text_encoder = tiny_text(["<pad>", "</s>", "<unk>", "a", "rabbit", "without", "the", "logo"])
    pipe = WanVACEPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                           text_encoder=text_encoder, tokenizer=tokenizer)  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def test_wan_vace_retakes_inside_a_mask(setup: Any, tmp_path: Path) -> None:
    """A retake of about 00:00:02-00:00:03 inside a box: VACE gets the span's own frames and, per frame, a
    mask white inside the box; the piece lands on Wan's 4k+1 grid at 16 fps and on the timeline."""
    store, vid, _ = setup
    model = tiny_wan_vace(tmp_path / "tiny-wan")
    options = {"diffusers": {"model": model, "pipeline": "wan-vace", "steps": 2, "max_width": 32}}
    box = {"x": 0.5, "y": 0.0, "width": 0.5, "height": 0.5}
    req = EditRequest(video_id=vid, operation="retake", anchor=(2.0, 3.0), prompt="the rabbit without the logo",
                      mask=box, backend="diffusers")  # fmt: skip
    plan, backend = prepare(store, req, None, options)
    span = (plan.end - plan.start) / plan.source.fps  # the ends may have moved to shot boundaries
    assert plan.fps == 16 and plan.frames % 4 == 1 and abs(plan.frames - span * 16) <= 2  # Wan's 4k+1
    video, mask = backend._vace_inputs(plan, {}, 32, 16)  # type: ignore[attr-defined]
    assert len(video) == len(mask) == plan.frames
    first = np.asarray(video[0], np.float64)
    source = grab(Path(plan.source.path), plan.start, plan.source.fps, 32, 16).astype(np.float64)
    assert np.abs(first - source).mean() < 12  # the span's own first frame
    m = np.asarray(mask[0])
    assert m[:8, 16:].min() == 255 and m[8:, :].max() == 0 and m[:, :16].max() == 0  # white only in the box
    result = run_edit(store, plan, backend, tmp_path / "retake")
    assert result["artifact"]["pipeline"] == "WanVACEPipeline" and result["artifact"]["mask"] == box
    assert count_frames(tmp_path / "retake" / "insert.mp4") == plan.timeline_frames
    ltx_only = {"diffusers": {"model": setup[2]["diffusers"]["model"], "steps": 2}}
    from reasoning.generate import RequestError

    with pytest.raises(RequestError, match="wan-vace pipeline can"):
        prepare(store, req, None, ltx_only)


def tiny_ltx2(folder: Path) -> Path:
    """A tiny LTX-2 condition pipeline (diffusers' own test configuration; the Gemma 3 text encoder
    built here from a tiny config with a word-level tokenizer, and the vocoder's upsampling made 160×,
    the mel hop, so its sound lasts as long as the picture), saved like a downloaded one."""
    import torch
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2ConditionPipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizerFast

    words = ["<pad>", "<eos>", "<bos>", "<unk>", "a", "rabbit", "hops", "in", "the", "meadow"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = GemmaTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config={"vocab_size": len(words), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "sliding_window": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14},
        mm_tokens_per_image=4,
    ))  # fmt: skip
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=32, rope_double_precision=False, rope_type="split",
    )  # fmt: skip
    torch.manual_seed(0)
    connectors = LTX2TextConnectors(
        caption_channels=32, text_proj_in_factor=3, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split",
    )  # fmt: skip
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False,
    )  # fmt: skip
    torch.manual_seed(0)
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8,
    )  # fmt: skip
    torch.manual_seed(0)
    vocoder = LTX2Vocoder(
        in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[20, 32], upsample_factors=[10, 16],
        resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]], leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    )  # fmt: skip
    pipe = LTX2ConditionPipeline(
        transformer=transformer, vae=vae, audio_vae=audio_vae, scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder, tokenizer=tokenizer, connectors=connectors, vocoder=vocoder,
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def test_ltx2_makes_the_sound_with_the_picture(setup: Any, tmp_path: Path) -> None:
    """LTX-2 extends a shot from its last frame and, asked to `generate` the audio, its own sound
    becomes the piece's sound track (the one backend that makes sound; the others refuse)."""
    import wave

    from reasoning.generate import RequestError

    store, vid, ltx = setup
    model = tiny_ltx2(tmp_path / "tiny-ltx2")
    options = {"diffusers": {"model": model, "pipeline": "ltx2-condition", "steps": 2, "max_width": 64}}
    req = EditRequest(video_id=vid, operation="extend", anchor=4.0, duration=0.5, prompt="a rabbit hops",
                      audio="generate", seed=3, backend="diffusers")  # fmt: skip
    plan, backend = prepare(store, req, None, options)
    assert plan.frames == 9 and plan.fps == 24  # LTX's 8k+1 grid
    result = run_edit(store, plan, backend, tmp_path / "x")
    art = result["artifact"]
    assert art["pipeline"] == "LTX2ConditionPipeline" and art["sound"] == "generated"
    assert art["conditions"] == [{"frame_index": 0, "strength": 1.0}]
    assert count_frames(tmp_path / "x" / "insert.mp4") == plan.timeline_frames
    with wave.open(str(tmp_path / "x" / "model.wav")) as w:  # the model's own sound, as long as its picture
        assert w.getframerate() == 16000 and w.getnchannels() == 2
        assert abs(w.getnframes() / 16000 - plan.frames / plan.fps) < 0.1
        made = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)
    assert np.abs(made).mean() > 1  # not silence
    heard = _sound(tmp_path / "x" / "insert.mp4")
    quiet = EditRequest(**{**req.model_dump(), "audio": "silence"})
    plan_q, backend_q = prepare(store, quiet, None, options)
    run_edit(store, plan_q, backend_q, tmp_path / "q")
    silent = _sound(tmp_path / "q" / "insert.mp4")
    assert len(heard) == len(silent) and np.abs(silent).max() == 0
    assert np.abs(heard).mean() > 1e-4  # the piece carries the model's sound
    ltx1 = {"diffusers": {**ltx["diffusers"], "pipeline": "ltx-condition"}}
    with pytest.raises(RequestError, match="ltx2-condition pipeline does"):
        prepare(store, req, None, ltx1)  # LTX-Video makes no sound
    with pytest.raises(RequestError, match="backends that can: diffusers, http"):
        prepare(store, EditRequest(**{**req.model_dump(), "backend": "ffmpeg"}), None, {})


def _sound(path: Path) -> np.ndarray:
    """The first audio stream of `path`, decoded to mono float samples at 16 kHz."""
    import subprocess

    from reasoning.generate.media import ffmpeg_path

    res = subprocess.run([ffmpeg_path(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", "16000",
                          "-f", "f32le", "-"], capture_output=True, check=True)  # fmt: skip
    return np.frombuffer(res.stdout, "<f4").astype(np.float64)
