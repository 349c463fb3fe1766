#!/usr/bin/env bash
# A Flickr8k model from the raw photos, timed in one go (issue 20's "under 2 hours on 2 CPU cores"):
#   1. the fused 14x14 decoder, 8 epochs from scratch with attention supervision, from an empty feature cache;
#   2. one epoch more with the top of the encoder fine-tuned (its own, smaller cache below the tuned blocks).
# Each stage ends with train.py's greedy test report; wall time and peak memory go to OUT/times.txt.
#
#   bench/from_raw_images.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR]
#
# Results: bench/RESULTS.md, "Fine-tuning the encoder: epoch time and memory". Needs /usr/bin/time (GNU).
set -euo pipefail
out="${1:?usage: bench/from_raw_images.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR]}"
flickr8k="${2:-../shared/data/flickr8k}"
entities="${3:-../shared/data/flickr30k_entities}"
mkdir -p "$out"
common=(--dataset flickr8k --data-dir "$flickr8k" --feature-cache "$out/cache"
        --attention-supervision "$entities" --supervision-weight 3 --lambda 0 --label-smoothing 0.1)

. "$(dirname "$0")/stages.sh"  # stage NAME FLAGS...: one train.py run, resumed or skipped

stage decoder --encoder-layer block_13_expand_relu+out_relu --lr 1e-3 --epochs 8 --seed 13
stage fine-tuned --init "$out/decoder/best.keras" --fine-tune-encoder 1 --encoder-lr 1e-4 --lr 2e-4 --epochs 1 --seed 14
cat "$out/times.txt"
