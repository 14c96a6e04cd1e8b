# shellcheck shell=bash
# Sourced by the scripts in scripts/: where they keep state, how they read it back and how they
# decide a pid is still theirs. State holds passwords and pid files, so a directory someone else
# can write to would let them choose what we read, kill or overwrite (issue #13).

# secure_dir DIR: create DIR with mode 0700, or accept an existing one only when it is a real
# directory owned by us and writable by nobody else.
secure_dir() {
  local dir=$1 owner mode
  if [[ -L $dir ]]; then
    echo "${0##*/}: $dir is a symbolic link; refusing to keep state there (remove it or point the variable elsewhere)" >&2
    exit 1
  fi
  if [[ ! -e $dir ]]; then
    mkdir -p "$(dirname "$dir")"
    # mkdir fails when someone created it meanwhile, so the checks below see the winner.
    mkdir -m 0700 "$dir" 2>/dev/null || true
  fi
  if [[ ! -d $dir || -L $dir ]]; then
    echo "${0##*/}: $dir is not a directory; refusing to keep state there" >&2
    exit 1
  fi
  read -r owner mode < <(stat -c '%u %a' "$dir")
  if [[ $owner != "$(id -u)" ]]; then
    echo "${0##*/}: state directory $dir is owned by uid $owner, not by you (uid $(id -u)); refusing to use it: remove it or set another path" >&2
    exit 1
  fi
  if (( 8#$mode & 8#022 )); then
    echo "${0##*/}: state directory $dir is writable by group or others (mode $mode); refusing to use it: chmod 700 it or remove it" >&2
    exit 1
  fi
}

# start_time PID: the kernel's start time of PID in clock ticks since boot (field 22 of
# /proc/PID/stat; the comm field may hold spaces and parentheses, so cut after the last ')').
start_time() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # After "pid (comm) " the state is field 3, so start time (22) is word 20 here.
  awk '{print $20}' <<<"$stat"
}

# record_pid FILE PID: remember PID with its start time, so a reused pid is never mistaken.
record_pid() {
  local started
  started=$(start_time "$2") || started=0
  (umask 077; printf '%s %s\n' "$2" "$started" >"$1")
}

# owned_pid FILE: print the recorded pid when that process is still the one we started (same
# pid and start time); fail otherwise, so callers never signal a stranger.
owned_pid() {
  local file=$1 pid started now
  [[ -f $file ]] || return 1
  read -r pid started _ <"$file" || true
  [[ $pid =~ ^[1-9][0-9]*$ && $started =~ ^[0-9]+$ ]] || {
    echo "${0##*/}: $file does not hold 'PID STARTTIME'; not signalling anything (remove the file)" >&2
    return 1
  }
  now=$(start_time "$pid") || return 1
  [[ $now == "$started" ]] || return 1
  echo "$pid"
}

# read_secret FILE: the one line of FILE, refused unless it is made of URL-safe characters
# (what our generators write): a value that could be shell text is never passed on.
read_secret() {
  local value
  value=$(head -n 1 "$1")
  if [[ ! $value =~ ^[A-Za-z0-9._~=-]+$ ]]; then
    echo "${0##*/}: $1 holds characters other than A-Z a-z 0-9 . _ ~ = -; refusing it (delete the file and a new value is generated)" >&2
    exit 1
  fi
  printf '%s\n' "$value"
}

# print_env_lines KEY...: `export KEY=value` lines quoted for the shell, for `eval "$(...)"`.
print_env_lines() {
  local key
  for key in "$@"; do printf 'export %s=%q\n' "$key" "${!key}"; done
}

# load_env_lines KEY...: read `export KEY=value` lines from stdin, as printed by
# print_env_lines for plain values, and export only the KEYs named; nothing is evaluated.
load_env_lines() {
  local line key value allowed=" $* "
  while IFS= read -r line; do
    [[ $line =~ ^export\ ([A-Z_][A-Z0-9_]*)=([A-Za-z0-9._~:/@+,=-]*)$ ]] || {
      echo "${0##*/}: unexpected line in the environment output: refusing it" >&2; return 1; }
    key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
    [[ $allowed == *" $key "* ]] || { echo "${0##*/}: unexpected variable $key" >&2; return 1; }
    export "$key=$value"
  done
}

# need COMMAND PACKAGE [COMMAND PACKAGE ...]: install the Debian package of each command that is
# missing (root needed; otherwise say which and stop), so a fresh machine needs no hand step.
need() {
  local missing=()
  while [[ $# -gt 0 ]]; do command -v "$1" >/dev/null || missing+=("$2"); shift 2; done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) != 0 ]]; then echo "${0##*/}: missing ${missing[*]}; install them (root needed)" >&2; exit 1; fi
  echo "${0##*/}: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# tool COMMAND PACKAGE: the path of COMMAND, from PATH or else unpacked from its Debian package
# into .run/tools (apt-get download and dpkg-deb -x: nothing installed, no service started;
# prometheus's package would start a server). For checkers such as promtool and amtool.
tool() {
  local command=$1 package=$2 root=${RICE_TOOLS_DIR:-$PWD/.run/tools}
  if command -v "$command" >/dev/null; then command -v "$command"; return; fi
  if [[ ! -x $root/usr/bin/$command ]]; then
    mkdir -p "$root/debs"
    if ! (cd "$root/debs" && apt-get download -qq "$package" >/dev/null 2>&1); then
      [[ $(id -u) == 0 ]] || { echo "${0##*/}: cannot download $package (apt lists missing; root needed)" >&2; return 1; }
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      (cd "$root/debs" && apt-get download -qq "$package" >/dev/null)
    fi
    local debs=("$root/debs/${package}"_*.deb)
    dpkg-deb -x "${debs[-1]}" "$root"
  fi
  echo "$root/usr/bin/$command"
}
