#!/usr/bin/env bash
# The GPU measurements docs/performance.md reports, in parts that each fit a 10-minute run.
#
#   bash bench/gpu_suite.sh encoder  OUTDIR   # encoder FLOP/s: SDPA, compiled, FlexAttention
#   bash bench/gpu_suite.sh decoder  OUTDIR   # cached decoder step: eager vs compiled
#   bash bench/gpu_suite.sh checks   OUTDIR   # the CUDA tests of the speed options
#   bash bench/gpu_suite.sh training OUTDIR   # steps per strategy, ViT-H LoRA memory
#   bash bench/gpu_suite.sh mfu      OUTDIR   # training MFU: ViT-H bf16 batch 4, SDPA and flex
#   bash bench/gpu_suite.sh mfu-compile OUTDIR  # the same, compiled; cached decoder compiled
#   bash bench/gpu_suite.sh blocks   OUTDIR   # late-block LoRA/adapters: time, memory, MFU
#
# Each benchmark's JSON + Markdown goes to OUTDIR/<name>.txt as it is produced, so a part cut
# short still leaves what it finished.
set -uo pipefail
part=${1:?part: encoder, decoder, checks, training, mfu, mfu-compile or blocks}
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
  mfu)
    run mfu_vit_h_sdpa python "$here/train_mfu.py" --model vit-h-random --batch 4 \
      --precision bf16 --strategies lora full --grad-ckpt --repeat 5
    run mfu_vit_h_flex python "$here/train_mfu.py" --model vit-h-random --batch 4 \
      --precision bf16 --strategies lora --grad-ckpt --attention flex --repeat 5
    run mfu_vit_b python "$here/train_mfu.py" --batch 4 --precision bf16 \
      --strategies full lora adapter decoder decoder-cached --repeat 5
    ;;
  mfu-compile)
    run mfu_vit_h_flex_compile python "$here/train_mfu.py" --model vit-h-random --batch 4 \
      --precision bf16 --strategies lora --grad-ckpt --attention flex --compile default \
      --warmup 3 --repeat 5
    run mfu_decoder_compile python "$here/train_mfu.py" --batch 4 --precision bf16 \
      --strategies decoder-cached --compile default --warmup 3 --repeat 10
    ;;
  blocks)
    for k in all last:6 last:3; do
      run "blocks_vit_b_${k/:/}" python "$here/train_mfu.py" --batch 4 --precision bf16 \
        --strategies lora adapter --blocks "$k" --repeat 5
    done
    run blocks_vit_h_last8 python "$here/train_mfu.py" --model vit-h-random --batch 4 \
      --precision bf16 --strategies lora --blocks last:8 --grad-ckpt --repeat 5
    ;;
  *)
    echo "unknown part $part" >&2
    exit 2
    ;;
esac
