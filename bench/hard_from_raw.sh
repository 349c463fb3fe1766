#!/usr/bin/env bash
# A hard-attention model from the raw Flickr8k photos inside issue 32's two hours on 2 CPU cores, timed in one go:
#   1. one soft decoder, EPOCHS epochs from scratch over the fused 14x14 grid with attention supervision (default 6);
#   2. DRAWS hard epochs from it, each with its own seed (default 2): REINFORCE with the expected-context baseline
#      and the mass loss on alpha;
#   3. the hard decoders averaged into one file whose decoders read one cell between them, decoded as shipped.
# The shipped hard model is the longer recipe of bench/rebuild_shipped.sh (three lineages, about 6 h 20 min); what
# this one gives: docs/results.md, "A hard model from raw photos in two hours".
#
#   bench/hard_from_raw.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR]
#   EPOCHS=8 DRAWS=3 bench/hard_from_raw.sh OUT ...     # longer
#   ATTENTION_UNITS=64 bench/hard_from_raw.sh OUT ...    # a smaller attention layer (default 256): a quarter faster
#
# Starts from an empty feature cache (OUT/cache), so filling it is timed too. A finished stage is skipped and an
# interrupted one resumed; wall time and peak memory of each stage go to OUT/times.txt (GNU /usr/bin/time).
set -euo pipefail
out="${1:?usage: bench/hard_from_raw.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR]}"
flickr8k="${2:-../shared/data/flickr8k}"
entities="${3:-../shared/data/flickr30k_entities}"
epochs="${EPOCHS:-6}"
draws="${DRAWS:-2}"
attention_units="${ATTENTION_UNITS:-256}"
mkdir -p "$out"
common=(--dataset flickr8k --data-dir "$flickr8k" --feature-cache "$out/cache" --attention-supervision "$entities"
        --lambda 0 --label-smoothing 0.1)

. "$(dirname "$0")/stages.sh"  # stage NAME FLAGS...: one train.py run, resumed or skipped

date +"started %F %T" >> "$out/times.txt"
stage soft1 --encoder-layer block_13_expand_relu+out_relu --supervision-weight 3 --lr 1e-3 --epochs "$epochs" --seed 42 \
    --attention-units "$attention_units"
members=()
for draw in $(seq 1 "$draws"); do  # the same soft decoder turned hard with different seeds: different draws, batches
    stage "hard$draw" --init "$out/soft1/best.keras" --attention hard --hard-estimator expected-baseline \
        --reward-scale 1 --supervision-loss mass --supervision-weight 1 --lr 2e-4 --epochs 1 --seed $((41 + 2 * draw))
    members+=("$out/hard$draw/best.keras")
done
python -m captioner ensemble "$out/hard.keras" "${members[@]}" --length-penalty 1.0 --no-repeat-ngram 3 --packed
date +"finished %F %T" >> "$out/times.txt"
cat "$out/times.txt"
