#!/usr/bin/env bash
# One-shot, idempotent set-up for DeepBehavior on Debian 12 / Ubuntu 22.04+.
#  1. Debian packages (AVR toolchain + simavr for the firmware simulator, Xvfb + xcb for Qt,
#     Aravis for GigE/USB3 Vision cameras, build deps for PyGObject, SLURM + munge for the tests' one-node
#     cluster behind `reanalyze --slurm`), installed only when missing.
#  2. A Python virtual environment (reused when its requirements have not changed).
#  3. The firmware ELF and the simulator harness, built from source.
# Environment: DEEPBEHAVIOR_VENV (default ~/.local/share/deepbehavior/venv),
#              DEEPBEHAVIOR_SKIP_APT=1 to skip step 1 (you then install the packages yourself).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEEPBEHAVIOR_VENV:-$HOME/.local/share/deepbehavior/venv}"
PY="${DEEPBEHAVIOR_PYTHON:-python3}"
log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(
  python3-venv python3-dev build-essential pkg-config make
  gcc-avr avr-libc arduino-core-avr avrdude simavr libsimavr-dev libelf-dev
  xvfb xauth libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libegl1 libgl1 libfontconfig1 libdbus-1-3
  fonts-dejavu-core
  gir1.2-aravis-0.8 aravis-tools libgirepository1.0-dev libcairo2-dev gobject-introspection
  slurm-wlm munge
)

install_apt() {
  if [[ "${DEEPBEHAVIOR_SKIP_APT:-0}" == 1 ]]; then log "skipping Debian packages (DEEPBEHAVIOR_SKIP_APT=1)"; return; fi
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && { log "Debian packages present"; return; }
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "need root or sudo to install: ${missing[*]}"; exit 1; }
    sudo="sudo"
  fi
  log "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pip's output goes to a log in the venv; on failure its tail is shown.
pip_logged() {
  if ! "$@" >>"$VENV/setup-pip.log" 2>&1; then
    log "pip failed; the end of $VENV/setup-pip.log:"
    tail -n 30 "$VENV/setup-pip.log" >&2
    exit 1
  fi
}

install_python() {
  local stamp_src stamp
  # what decides the Python packages: the project's requirements and this function (a change to the
  # Debian package list above does not reinstall them)
  stamp_src="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt"; sed -n '/^install_python()/,/^}/p' "$ROOT/scripts/setup.sh"; "$PY" --version)"
  stamp="$(printf '%s' "$stamp_src" | sha256sum | cut -d' ' -f1)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtual environment $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
  fi
  local pip=(pip_logged "$VENV/bin/python" -m pip --disable-pip-version-check -q)
  if [[ "$(cat "$VENV/.deepbehavior-stamp" 2>/dev/null)" != "$stamp" ]]; then
    log "installing Python packages into $VENV (first run: a few minutes)"
    "${pip[@]}" install -U pip wheel setuptools
    # torch first, pinned, so nothing later swaps in a CUDA build.
    "${pip[@]}" install -c "$ROOT/constraints.txt" torch==2.13.0
    "${pip[@]}" install -c "$ROOT/constraints.txt" -e "$ROOT[all,dev]"
    # mediapipe (version pinned in constraints.txt) for `deepbehavior pose`: 0.10.14 is the release whose
    # legacy pose/hand models ship inside the wheel (offline use). --no-deps: its declared deps would pull
    # opencv-contrib, jax and a protobuf that may break onnx. Then the deps its legacy solutions import
    # (sounddevice only for its audio tasks, which import it lazily; kept so `pip check` stays clean).
    "${pip[@]}" install -c "$ROOT/constraints.txt" --no-deps mediapipe
    "${pip[@]}" install -c "$ROOT/constraints.txt" absl-py attrs flatbuffers "protobuf>=4.25.3,<5" \
      "sounddevice>=0.4"
    echo "$stamp" > "$VENV/.deepbehavior-stamp"
  else
    log "Python packages up to date in $VENV"
  fi
  # The venv may be shared by several clones: point the editable install at this one.
  # (match the whole quoted path: /work/main must not pass for /check/work/main)
  if ! grep -rqsF -- "'$ROOT/rig'" "$VENV"/lib/python3*/site-packages/__editable__*deepbehavior* 2>/dev/null; then
    log "pointing the editable install at $ROOT"
    "${pip[@]}" install --no-deps --no-build-isolation -e "$ROOT"
  fi
}

build_firmware() {
  if [[ -f "$ROOT/firmware/Makefile" ]]; then
    log "building firmware and simulator harness"
    make -s -C "$ROOT/firmware" all >&2
  fi
}

install_apt
install_python
build_firmware
log "ready: $VENV"
echo "$VENV"
