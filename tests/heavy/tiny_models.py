"""Tiny randomly initialised models in the real on-disk formats of F5-TTS, Vocos and wav2vec2 (CTC).

The real weights cannot be fetched offline; these run the same loading and inference code in seconds on CPU.
Used by the heavy test fixtures and by ``python -m bench.models``.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from bench.random_models import vocos_mel_24khz

# A small F5-TTS DiT: dim divisible by 16 (rotary/conv constraints); the real v1 Base is dim 1024, depth 22.
TINY_F5_CONFIG = {"dim": 64, "depth": 2, "heads": 2, "ff_mult": 2, "text_dim": 32, "conv_layers": 1}
# Character vocabulary in F5's vocab.txt shape: one symbol per line, space first (index 0 = unknown).
TINY_F5_VOCAB = [" ", *string.ascii_lowercase, *string.ascii_uppercase, *".,;:!?'-\""]
TINY_VOCOS_CONFIG = vocos_mel_24khz(dim=32, intermediate_dim=64, num_layers=1)


def untrained_but_live(model) -> None:
    """Give DiT's zero-initialised layers (AdaLN modulation, output projection) small random weights.

    Freshly built, a DiT predicts zero flow whatever its input, so its samples would be the noise itself and a test
    could not tell one batch row's influence on another. Trained checkpoints have no all-zero layers either.
    """
    import torch

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() > 1 and not parameter.any():
                parameter.normal_(0.0, 0.02)


@dataclass(frozen=True)
class TinyF5:
    checkpoint: Path
    vocab_file: Path
    vocoder_dir: Path
    model_config: dict


def build_tiny_f5(directory: Path, seed: int = 0) -> TinyF5:
    """Write a random CFM+DiT checkpoint (EMA layout), its vocab.txt and a random Vocos vocoder dir."""
    import torch
    import yaml
    from f5_tts.model import CFM, DiT
    from vocos import Vocos

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("".join(f"{symbol}\n" for symbol in TINY_F5_VOCAB), encoding="utf-8")
    model = CFM(transformer=DiT(**TINY_F5_CONFIG, text_num_embeds=len(TINY_F5_VOCAB), mel_dim=100))
    untrained_but_live(model)
    checkpoint = directory / "model_tiny.pt"
    # The layout of F5's trainer checkpoints: EMA weights under "ema_model." keys.
    torch.save({"ema_model_state_dict": {f"ema_model.{k}": v for k, v in model.state_dict().items()}}, checkpoint)

    vocoder_dir = directory / "vocos"
    vocoder_dir.mkdir(exist_ok=True)
    (vocoder_dir / "config.yaml").write_text(yaml.safe_dump(TINY_VOCOS_CONFIG), encoding="utf-8")
    vocoder = Vocos.from_hparams(str(vocoder_dir / "config.yaml"))
    torch.save(vocoder.state_dict(), vocoder_dir / "pytorch_model.bin")
    return TinyF5(checkpoint, vocab_file, vocoder_dir, dict(TINY_F5_CONFIG))


def build_tiny_wav2vec2(directory: Path, seed: int = 0) -> Path:
    """Write a random character-CTC Wav2Vec2ForCTC + Wav2Vec2Processor loadable as an HF ``model_name``."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    symbols = ["<pad>", "<unk>", "|", *string.ascii_lowercase, "'"]
    vocab_path = directory / "vocab.json"
    vocab_path.write_text(json.dumps({s: i for i, s in enumerate(symbols)}), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_path), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    features = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(directory)
    # Same 7-layer conv front end as wav2vec2-base (320x downsampling = 20 ms frames), tiny widths.
    config = Wav2Vec2Config(
        vocab_size=len(symbols),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
        ctc_loss_reduction="mean",
    )
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    return directory
