# Shell functions shared by the benchmark scripts (sourced by
# bench/decode_ratios.sh and bench/ratios.sh, which define log(), and run()
# for commands that a dry run prints instead of running).

build_c() {  # build_c SRC OUT FLAGS...: (re)build a C benchmark when SRC is newer
  local src=$1 out=$2; shift 2
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
    log "building $out"
    run "$CC" "$@" "$src" -o "$out"
  fi
}

busy() {  # percent of all CPU time not idle over one second (other processes' load)
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local tot=0 i
  for i in 1 2 3 4 5 6 7 8; do tot=$(( tot + ${b[$i]} - ${a[$i]} )); done
  # idle + iowait count as idle
  echo $(( 100 - 100 * (${b[4]} - ${a[4]} + ${b[5]} - ${a[5]}) / (tot > 0 ? tot : 1) ))
}
