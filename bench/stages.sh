# Shared by bench/from_raw_images.sh and bench/rebuild_shipped.sh (sourced, not run): `stage NAME FLAGS...` runs
# `python train.py "${common[@]}" FLAGS --run-dir "$out/NAME"`, resuming an interrupted stage and skipping a
# finished one, with its wall time and peak memory appended to "$out/times.txt" (GNU /usr/bin/time).
stage() {
    local name="$1"; shift
    [ -f "$out/$name.done" ] && return 0
    local resume=()
    [ -f "$out/$name/config.json" ] && resume=(--resume)
    /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS" -a -o "$out/times.txt" \
        python train.py "${common[@]}" "$@" --run-dir "$out/$name" "${resume[@]}" 2>&1 | tee -a "$out/$name.log"
    touch "$out/$name.done"
}
