#!/usr/bin/env bash
# Rebuilds the wheel folder that scripts/gpu-check.sh installs on the GPU machine (no network there), run from the
# repo root on a machine with PyPI access: scripts/gpu-wheels.sh [OUTPUT_DIR, default .whl].
#
# The GPU machine already has python3 3.12 with CUDA torch, torchaudio, transformers and their usual needs; these are
# the rest, pinned, installed there with --no-deps. encodec has no wheel on PyPI, so it is built from its sdist.
# wandb and whisperx are repacked smaller so the working tree that travels stays under its 64 MiB limit: nothing
# imports wandb's service programs (wandb/bin/, 51 MB) or whisperx's voice-activity-detection model (17 MB) here.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    annotated_types==0.8.0 cffi==2.1.1 datasets==5.2.0 decorator==5.3.1 dill==0.4.1 einx==0.4.3 ema_pytorch==0.8.3
    espeakng_loader==0.2.4 f5_tts==1.1.22 frozendict==2.5.1 librosa==0.11.0 loguru==0.7.3 multiprocess==0.70.19
    nltk==3.10.4 num2words==0.5.14 opentelemetry_api==1.45.2 platformdirs==4.14.8 pooch==1.9.0 pydantic==2.14.4
    pydantic_core==2.50.5 pydantic_settings==2.16.3 pydub==0.25.1 pypinyin==0.55.0 python_dotenv==1.2.4
    rjieba==0.2.2 soundfile==0.14.0 soxr==1.1.0 torch_einops_utils==0.2.0 torchcodec==0.11.1
    typing_inspection==0.4.5 vocos==0.1.0 x_transformers==2.31.10
)
SDISTS=(encodec==0.1.1)
# wheel, paths to drop, build tag marking the repacked wheel
REPACKS=(
    "wandb==0.31.0 wandb/bin/ 0nobin"
    "whisperx==3.8.6 whisperx/assets/pytorch_model.bin 0alignonly"
)

PYTHON=${PYTHON:-python3}
OUT_DIR=${1:-.whl}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The GPU machine's python: CPython 3.12 on x86-64 Linux with glibc 2.28 or newer.
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$OUT_DIR" "${WHEELS[@]}"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d "$WORK" "${REPACKS[@]%% *}"
"$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$OUT_DIR" "${SDISTS[@]}"

# Copies the wheel without the entries under the dropped path and their RECORD lines, adding the build tag to its name.
repack() {
    "$PYTHON" - "$@" <<'PY'
import os
import sys
import zipfile

source, drop, build_tag, out_dir = sys.argv[1:]
name, version, tags = os.path.basename(source)[:-len(".whl")].split("-", 2)
target = os.path.join(out_dir, f"{name}-{version}-{build_tag}-{tags}.whl")
record = f"{name}-{version}.dist-info/RECORD"
with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
    for info in old.infolist():
        if info.filename.startswith(drop):
            continue
        data = old.read(info)
        if info.filename == record:
            lines = data.decode().splitlines(keepends=True)
            data = "".join(line for line in lines if not line.startswith(drop)).encode()
        new.writestr(info, data)
print(f"repacked {os.path.basename(target)}")
PY
}

for entry in "${REPACKS[@]}"; do
    read -r pin drop build_tag <<<"$entry"
    repack "$WORK/${pin%%==*}-${pin##*==}-"*.whl "$drop" "$build_tag" "$OUT_DIR"
done
ls "$OUT_DIR"
