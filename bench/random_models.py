"""Full-size randomly initialised F5TTS_v1_Base, Vocos mel-24khz and wav2vec2-base-960h, in the real on-disk layouts.

Compute cost does not depend on the weights' values, so these measure production speed where the checkpoints cannot
be fetched. They are written once to a cache outside the repository (``NARRATION_RANDOM_MODELS``, default
``~/.cache/narration/random-models``) in the layout ``Settings.model_dir`` expects, and loaded by the real loaders:
``f5tts/F5TTS_v1_Base/model_1250000.safetensors`` (EMA keys, f5_tts's packaged vocab), ``vocos-mel-24khz/``
(config.yaml + pytorch_model.bin) and ``wav2vec2-base-960h/`` (save_pretrained: an HF ``model_name`` for whisperx).
The gate's ASR (faster-whisper small.en, CTranslate2) is not built: see ``GATE_NOTE``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def vocos_mel_24khz(dim: int = 512, intermediate_dim: int = 1536, num_layers: int = 8) -> dict:
    """charactr/vocos-mel-24khz's config.yaml (the vocoder F5-TTS ships with); smaller widths give a test vocoder
    of the same architecture and mel front end."""
    return {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "n_mels": 100, "padding": "center"},
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {"input_channels": 100, "dim": dim, "intermediate_dim": intermediate_dim,
                          "num_layers": num_layers},
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {"dim": dim, "n_fft": 1024, "hop_length": 256, "padding": "same"},
        },
    }


VOCOS_MEL_24KHZ = vocos_mel_24khz()
# facebook/wav2vec2-base-960h's character vocabulary (whisperx's English default is its torchaudio twin).
WAV2VEC2_BASE_960H_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
GATE_NOTE = ("gate ASR at real size (faster-whisper small.en) not built: a CTranslate2 model is converted from a "
             "transformers checkpoint plus its tokenizer files, which are not obtainable offline; the gate row uses "
             "the real tiny.en weights")


def cache_root() -> Path:
    return Path(os.environ.get("NARRATION_RANDOM_MODELS", Path.home() / ".cache" / "narration" / "random-models"))


def f5_checkpoint(root: Path) -> Path:
    return root / "f5tts" / "F5TTS_v1_Base" / "model_1250000.safetensors"


def build_f5_v1_base(root: Path, seed: int = 0) -> Path:
    """Random CFM + DiT with F5TTS_v1_Base's packaged arguments and vocab, as EMA safetensors (the HF release's
    keys); returns the checkpoint. Skipped when it exists."""
    path = f5_checkpoint(root)
    if path.is_file():
        return path
    from importlib.resources import files

    import torch
    from f5_tts.model import CFM, DiT
    from f5_tts.model.utils import get_tokenizer
    from safetensors.torch import save_file

    from narration.synth.f5tts import packaged_architecture
    from tests.heavy.tiny_models import untrained_but_live

    torch.manual_seed(seed)
    _, vocab_size = get_tokenizer(str(files("f5_tts").joinpath("infer/examples/vocab.txt")), "custom")
    model = CFM(transformer=DiT(**packaged_architecture("F5TTS_v1_Base"), text_num_embeds=vocab_size, mel_dim=100))
    untrained_but_live(model)
    state = {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items() if not k.startswith("mel_spec")}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path.with_suffix(".partial")))
    path.with_suffix(".partial").rename(path)
    return path


def build_vocos_mel_24khz(root: Path, seed: int = 0) -> Path:
    directory = root / "vocos-mel-24khz"
    if (directory / "pytorch_model.bin").is_file():
        return directory
    import torch
    import yaml
    from vocos import Vocos

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(VOCOS_MEL_24KHZ), encoding="utf-8")
    vocoder = Vocos.from_hparams(str(directory / "config.yaml"))
    torch.save(vocoder.state_dict(), directory / "pytorch_model.partial")
    (directory / "pytorch_model.partial").rename(directory / "pytorch_model.bin")
    return directory


def build_wav2vec2_base_960h(root: Path, seed: int = 0) -> Path:
    """Random Wav2Vec2ForCTC with wav2vec2-base's architecture (transformers' defaults are that model's config)."""
    directory = root / "wav2vec2-base-960h"
    if (directory / "model.safetensors").is_file() or (directory / "pytorch_model.bin").is_file():
        return directory
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.json"
    vocab.write_text(json.dumps({s: i for i, s in enumerate(WAV2VEC2_BASE_960H_VOCAB)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                        return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(directory)
    config = Wav2Vec2Config(vocab_size=len(WAV2VEC2_BASE_960H_VOCAB), pad_token_id=0, ctc_loss_reduction="sum")
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    return directory


def build_all(root: Path | None = None) -> Path:
    root = root or cache_root()
    build_f5_v1_base(root)
    build_vocos_mel_24khz(root)
    build_wav2vec2_base_960h(root)
    return root


if __name__ == "__main__":
    print(build_all())
