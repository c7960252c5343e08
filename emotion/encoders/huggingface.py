"""Hugging Face `transformers` speech encoders: Whisper's encoder and the wav2vec2 family (wav2vec2, HuBERT, WavLM).

`features.encoder` names a hub id (`openai/whisper-base`, `microsoft/wavlm-base-plus`,
`facebook/hubert-base-ls960`) or a folder in the Hugging Face layout; `from_pretrained` reads either.
This tool downloads nothing: a hub id is read from the local Hugging Face cache, where a user put it
once (`hf download ID`), and an id that is not there is refused in one line naming both ways to weights.

The hidden states are what `output_hidden_states=True` gives: the input of the first layer, then each
layer's output (the last one after the final layer norm, where the model has one).

- Whisper takes the log-mel of its own feature extractor (the folder's `preprocessor_config.json`): the
  numbers it gives for a 30 s input, computed on only the frames the encoder reads (`WhisperLogMel`).
  `whisper_input="pad30"` runs the encoder on all 3000 frames, as Whisper was trained; `"cut"` keeps only
  the clip's frames and the matching position embeddings, far cheaper for short clips. Either way each
  clip is pooled over its own frames, and clips longer than 30 s are encoded in 30 s windows.
- The wav2vec2 family runs its convolutional front end one clip at a time (the group norm of base models
  spans the whole input, so padding would change it), then the transformer on a padded batch, masked.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from emotion.encoders.base import Encoder, frame_mask, per_clip_frames
from emotion.encoders.whisper_frontend import WhisperLogMel
from emotion.errors import ConfigError

WhisperInput = Literal["cut", "pad30"]
WHISPER_INPUTS = ("cut", "pad30")
#: Files whose identity keys the feature cache (the config and the weights).
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def looks_like_a_path(source: str) -> bool:
    """True for a folder's path (`/...`, `./...`, `../...`, `~/...`); a hub id is `ORG/NAME` or `NAME`."""
    return source.startswith(("/", ".", "~"))


def resolve_folder(source: str) -> Path:
    """The local folder of `source`: the folder itself, or a hub id's snapshot in the Hugging Face cache.

    ConfigError in one line if neither is there, naming both ways to get the weights.
    """
    folder = Path(source).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(f"features.encoder={source}: the folder has no config.json (not a Hugging Face model)")
        return folder
    if looks_like_a_path(source):
        raise ConfigError(f"features.encoder={source}: no such folder; give a folder holding the model or a hub id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # huggingface_hub's not-cached errors share no base class narrower than this
        raise ConfigError(
            f"features.encoder={source}: not in the Hugging Face cache ({HF_HUB_CACHE}), and this tool downloads "
            f"nothing: fetch it once where the hub can be reached (`hf download {source}`), or point "
            "features.encoder at a folder holding it (config.json, model.safetensors, preprocessor_config.json)"
        ) from None


def weights_fingerprint(folder: Path) -> str:
    """Identity of a model folder's current config and weights: each file's resolved path, size and mtime."""
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES)
    parts = []
    for path in files:
        stat = path.stat()
        parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def checked(loaded: tuple[torch.nn.Module, dict[str, list]], source: str) -> torch.nn.Module:
    """The model of `from_pretrained(..., output_loading_info=True)`; ConfigError if it lacks pretrained weights."""
    model, info = loaded
    if info.get("missing_keys"):
        missing = info["missing_keys"]
        raise ConfigError(
            f"features.encoder={source}: the folder lacks {len(missing)} of the model's weights (e.g. {missing[0]})"
        )
    return model


class HuggingFaceEncoder(Encoder):
    """What the two families share: resolving the folder, its fingerprint, and saving a copy of it."""

    def __init__(self, source: str, folder: Path, config: dict[str, Any]) -> None:
        super().__init__()
        self.source, self.folder, self.config = source, folder, config
        self.fingerprint = weights_fingerprint(folder)
        #: The dtype the weights are stored in: a carried copy keeps it (float16 stays float16).
        self.stored_dtype = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or "float32"))

    def identity(self) -> dict[str, Any]:
        """The model type and its weights' fingerprint (not the name: a hub id and its folder key the same cache)."""
        return {"encoder": self.config.get("model_type"), "weights": self.fingerprint}

    def save(self, folder: Path) -> None:
        """The encoder alone, in its stored dtype, with its feature extractor: a folder `from_pretrained` reads."""
        copy.deepcopy(self.model).to("cpu", self.stored_dtype).save_pretrained(folder)
        if self.extractor is not None:
            self.extractor.save_pretrained(folder)

    @property
    def extractor(self) -> Any:
        return None


class WhisperEncoderLayers(HuggingFaceEncoder):
    """Whisper's encoder over its own log-mel front end: the input embeddings and every layer (layers + 1)."""

    max_seconds = 30.0

    def __init__(
        self, source: str, folder: Path, config: dict[str, Any], whisper_input: WhisperInput = "pad30"
    ) -> None:
        super().__init__(source, folder, config)
        if whisper_input not in WHISPER_INPUTS:
            raise ConfigError(f"features.whisper_input={whisper_input}: choose one of {list(WHISPER_INPUTS)}")
        from transformers import WhisperFeatureExtractor

        self.whisper_input = whisper_input
        self._extractor = WhisperFeatureExtractor.from_pretrained(folder)
        self.log_mel = WhisperLogMel(self._extractor)
        self.sample_rate = int(self._extractor.sampling_rate)
        self.hop_length = int(self._extractor.hop_length)
        self.input_frames = int(self._extractor.nb_max_frames)
        self.num_layers = int(config["encoder_layers"]) + 1
        self.width = int(config["d_model"])

    @property
    def extractor(self) -> Any:
        return self._extractor

    def identity(self) -> dict[str, Any]:
        return super().identity() | {"whisper_input": self.whisper_input}

    def padded_cost(self, samples: int) -> int:
        return samples if self.whisper_input == "cut" else self.input_frames * self.hop_length

    def load(self) -> torch.nn.Module:
        from transformers import WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if "WhisperEncoder" in self.config.get("architectures", []):  # a copy carried by a promoted model
            return checked(WhisperEncoder.from_pretrained(self.folder, dtype=torch.float32, output_loading_info=True),
                           self.source)  # fmt: skip
        model = checked(WhisperModel.from_pretrained(self.folder, dtype=torch.float32, output_loading_info=True),
                        self.source)  # fmt: skip
        return model.encoder

    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frames = 2 * torch.div(torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor") + 1,
                               2, rounding_mode="floor")  # fmt: skip
        if self.whisper_input == "pad30":
            log_mel = self.log_mel(waves, lengths, self.input_frames)
            states = self.model(log_mel, output_hidden_states=True).hidden_states
            return list(states), frames // 2
        log_mel = self.log_mel(waves, lengths, int(frames.max()))
        return cut_whisper_layers(self.model, log_mel, frames), frames // 2


def cut_whisper_layers(encoder: torch.nn.Module, log_mel: torch.Tensor, frames: torch.Tensor) -> list[torch.Tensor]:
    """Whisper's encoder on only the clips' frames (an even number each): what `WhisperEncoder.forward` does on
    3000 frames, with the position embeddings cut to the input's length and the padding masked out of attention.

    (transformers' `WhisperEncoder` insists on 3000 input frames and ignores any mask, hence this copy of its
    forward.) Input frames past a clip's own are zeroed, as the convolutions' zero padding would be if the
    clip were alone; keys past its output frames are masked. A batch of clips of one length needs no mask, and
    attention then runs on its fastest kernel.
    """
    total = log_mel.shape[-1]
    padded = bool((frames < total).any())
    x = log_mel * frame_mask(frames, total)[:, None, :].to(log_mel.dtype) if padded else log_mel
    x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(x)))).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    mask = padding_mask(frames // 2, x.shape[1], x.dtype) if padded else None
    states = [x]
    for layer in encoder.layers:
        x = layer(x, mask)
        states.append(x)
    states[-1] = encoder.layer_norm(x)
    return states


def padding_mask(frames: torch.Tensor, total: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask (batch, 1, 1, total) hiding keys past each clip's `frames`."""
    keys = frame_mask(frames, total)
    mask = torch.zeros(keys.shape, dtype=dtype, device=keys.device).masked_fill(~keys, torch.finfo(dtype).min)
    return mask[:, None, None, :]


class Wav2Vec2FamilyLayers(HuggingFaceEncoder):
    """A wav2vec2, HuBERT or WavLM model (`AutoModel`): the transformer's input and every layer (layers + 1)."""

    def __init__(self, source: str, folder: Path, config: dict[str, Any]) -> None:
        super().__init__(source, folder, config)
        from transformers import Wav2Vec2FeatureExtractor

        has_extractor = (folder / "preprocessor_config.json").is_file()
        self._extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder) if has_extractor else None
        self.normalize = bool(self._extractor.do_normalize) if self._extractor is not None else True
        self.sample_rate = int(self._extractor.sampling_rate) if self._extractor is not None else 16000
        self.num_layers = int(config["num_hidden_layers"]) + 1
        self.width = int(config["hidden_size"])

    @property
    def extractor(self) -> Any:
        return self._extractor

    def load(self) -> torch.nn.Module:
        from transformers import AutoModel

        return checked(AutoModel.from_pretrained(self.folder, dtype=torch.float32, output_loading_info=True),
                       self.source)  # fmt: skip

    def hidden_states(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        padded, frames = per_clip_frames(waves, lengths, self._front_end)
        return encoder_states(self.model.encoder, padded, frame_mask(frames, padded.shape[1])), frames

    def _front_end(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip's projected front-end frames (frames, hidden), normalised first as its feature extractor does."""
        if self.normalize:  # Wav2Vec2FeatureExtractor's zero-mean, unit-variance normalisation
            wave = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        features = self.model.feature_extractor(wave[None]).transpose(1, 2)
        projected = self.model.feature_projection(features)
        return (projected[0] if isinstance(projected, tuple) else projected)[0]


def encoder_states(encoder: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """What `output_hidden_states=True` gives for the transformer of a wav2vec2-family model, on masked frames:
    the first layer's input, then every layer's output.

    The model's encoder is called directly, after the front end ran per clip; its layers' inputs and outputs
    are read by hooks, as transformers' own output recording does.
    """
    states: list[torch.Tensor] = []
    layers = encoder.layers
    hooks = [layers[0].register_forward_pre_hook(lambda _m, args, _kw: states.append(args[0]), with_kwargs=True)]
    hooks += [layer.register_forward_hook(lambda _m, _a, out: states.append(_first(out))) for layer in layers]
    try:
        encoder(hidden, attention_mask=mask)
    finally:
        for hook in hooks:
            hook.remove()
    return states


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def load_huggingface(source: str, whisper_input: WhisperInput = "pad30") -> HuggingFaceEncoder:
    """The encoder of a hub id or folder: Whisper's, or a wav2vec2-family model's (read from its config.json)."""
    folder = resolve_folder(source)
    config = read_config(folder)
    if config.get("model_type") == "whisper":
        return WhisperEncoderLayers(source, folder, config, whisper_input)
    if "conv_dim" in config:  # the wav2vec2 family's convolutional front end
        return Wav2Vec2FamilyLayers(source, folder, config)
    raise ConfigError(
        f"features.encoder={source} is a {config.get('model_type', 'unknown')} model: choose a Whisper or a "
        "wav2vec2-family (wav2vec2, HuBERT, WavLM) speech encoder"
    )
