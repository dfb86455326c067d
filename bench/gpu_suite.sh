#!/usr/bin/env bash
# The GPU measurements docs/performance.md reports, in parts that each fit a 10-minute run.
#
#   bash bench/gpu_suite.sh encoder  OUTDIR   # encoder FLOP/s: SDPA, compiled, FlexAttention
#   bash bench/gpu_suite.sh decoder  OUTDIR   # cached decoder step: eager vs compiled
#   bash bench/gpu_suite.sh checks   OUTDIR   # the CUDA tests of the speed options
#   bash bench/gpu_suite.sh training OUTDIR   # steps per strategy, ViT-H LoRA memory
#
# Each benchmark's JSON + Markdown goes to OUTDIR/<name>.txt as it is produced, so a part cut
# short still leaves what it finished.
set -uo pipefail
part=${1:?part: encoder, decoder, checks or training}
out=${2:-bench-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
here=$(cd "$(dirname "$0")" && pwd)
run() {  # run NAME CMD...: tee the output, keep going on failure
  local name=$1
  shift
  echo "== $name: $*"
  "$@" 2>&1 | grep -v -e "UserWarning" -e "warnings.warn" | tee "$out/$name.txt"
}
case $part in
  encoder)
    run encoder_vit_b python "$here/encoder_flops.py"
    run encoder_vit_h python "$here/encoder_flops.py" --model vit-h-random --batch 4 \
      --variants sdpa flex+compile
    ;;
  decoder)
    run decoder_compile python "$here/train_step.py" --strategies decoder --batch 1 4 \
      --compile default --warmup 3
    run decoder_graphs python "$here/train_step.py" --strategies decoder --batch 1 4 \
      --compile reduce-overhead --warmup 4
    run decoder_channels_last python "$here/train_step.py" --strategies decoder --batch 4 \
      --channels-last
    ;;
  checks)
    run test_fast python -m pytest -q -p no:cacheprovider "$here/../tests/test_fast.py"
    ;;
  training)
    run lora_flex python "$here/train_step.py" --strategies lora full --batch 4 \
      --attention flex --compile default --warmup 3
    run vit_h_lora python "$here/train_step.py" --model vit-h-random --strategies lora \
      --batch 1 --grad-ckpt --attention flex
    ;;
  *)
    echo "unknown part $part" >&2
    exit 2
    ;;
esac
