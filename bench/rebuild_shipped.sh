#!/usr/bin/env bash
# Rebuild the two shipped models from the raw Flickr8k photos, stage by stage, as they were trained:
#   the soft model: three decoders (A, B, C) over the fused 14x14 MobileNetV2 grid, attention supervised with the
#     training photos' Flickr30k Entities boxes, each ending with one epoch of the mass loss; averaged into one file;
#   the hard model: decoders A, B and C turned hard (REINFORCE with the expected-context baseline: A three
#     epochs, B and C one), averaged into one file whose decoders read one cell between them.
# Why each stage and what else was tried: docs/results.md; the models' numbers: captioner/pretrained/MODEL_CARD.md.
#
#   bench/rebuild_shipped.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR]            # both models, about 6 h 20 min on 2 cores
#   HARD_ONLY=1 bench/rebuild_shipped.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR] # the hard stages from the shipped soft file
#
# A finished stage is skipped and an interrupted one resumed, so the script can be run again after a stop.
# Wall time and peak memory of each stage go to OUT/times.txt (GNU /usr/bin/time). Every stage keeps the epoch
# with the best dev CIDEr-D (greedy) as its best.keras, as the shipped lineages did. Seeds are those of the
# shipped runs; on other hardware the numbers will differ by about a seed's spread (docs/results.md).
set -euo pipefail
out="${1:?usage: bench/rebuild_shipped.sh OUT [FLICKR8K_DIR] [ENTITIES_DIR]}"
flickr8k="${2:-../shared/data/flickr8k}"
entities="${3:-../shared/data/flickr30k_entities}"
mkdir -p "$out"
common=(--dataset flickr8k --data-dir "$flickr8k" --attention-supervision "$entities" --lambda 0 --label-smoothing 0.1)
fused=(--encoder-layer block_13_expand_relu+out_relu)
mass_epoch=(--supervision-loss mass --supervision-weight 1 --lr 2e-4 --epochs 1)
shipping=(--length-penalty 1.0 --no-repeat-ngram 3 --packed)  # the decoding chosen on dev, saved with the model

. "$(dirname "$0")/stages.sh"  # stage NAME FLAGS...: one train.py run, resumed or skipped

if [ -n "${HARD_ONLY:-}" ]; then  # decoders A, B and C as shipped: the members of the soft file
    python -m captioner ensemble "$out/members" --unpack captioner/pretrained/flickr8k_mobilenetv2.keras --float32
    decoder_a="$out/members/member_0.keras" decoder_b="$out/members/member_1.keras"
    decoder_c="$out/members/member_2.keras"
else
    # Decoder A: 4 epochs with a strong pull toward the boxes, then gentler continuations.
    stage a1 "${fused[@]}" --supervision-weight 5 --epochs 4 --seed 0
    stage a2 --init "$out/a1/best.keras" --supervision-weight 1 --lr 2e-4 --epochs 2 --seed 0
    stage a3 --init "$out/a2/best.keras" --supervision-weight 3 --lr 5e-4 --epochs 5 --seed 3
    stage a4 --init "$out/a3/best.keras" --supervision-weight 3 --lr 5e-4 --epochs 3 --seed 4
    stage a5-mass --init "$out/a4/best.keras" "${mass_epoch[@]}" --seed 0
    # Decoder B: 8 epochs from scratch, then the mass epoch.
    stage b1 "${fused[@]}" --supervision-weight 3 --lr 1e-3 --epochs 8 --seed 11
    stage b2-mass --init "$out/b1/best.keras" "${mass_epoch[@]}" --seed 2
    # Decoder C: 8 epochs from scratch, 3 more at a lower rate, then the mass epoch.
    stage c1 "${fused[@]}" --supervision-weight 3 --lr 1e-3 --epochs 8 --seed 7
    stage c2 --init "$out/c1/best.keras" --supervision-weight 3 --lr 5e-4 --epochs 3 --seed 8
    stage c3-mass --init "$out/c2/best.keras" "${mass_epoch[@]}" --seed 1
    python -m captioner ensemble "$out/flickr8k_mobilenetv2.keras" "$out/a5-mass/best.keras" \
        "$out/b2-mass/best.keras" "$out/c3-mass/best.keras" "${shipping[@]}"
    decoder_a="$out/a5-mass/best.keras" decoder_b="$out/b2-mass/best.keras" decoder_c="$out/c3-mass/best.keras"
fi

# The hard model: each decoder read one cell a word, REINFORCE against the expected context, the mass loss kept.
hard=(--attention hard --hard-estimator expected-baseline --reward-scale 1 --supervision-loss mass --supervision-weight 1)
stage hard-a --init "$decoder_a" "${hard[@]}" --lr 3e-4 --epochs 3 --seed 24
stage hard-b --init "$decoder_b" "${hard[@]}" --lr 2e-4 --epochs 1 --seed 31
stage hard-c --init "$decoder_c" "${hard[@]}" --lr 2e-4 --epochs 1 --seed 32
python -m captioner ensemble "$out/flickr8k_mobilenetv2_hard.keras" "$out/hard-a/best.keras" "$out/hard-b/best.keras" \
    "$out/hard-c/best.keras" "${shipping[@]}"
cat "$out/times.txt"
