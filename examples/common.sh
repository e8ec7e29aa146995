# Sourced by the example scripts, not run on its own:
#   help_if_asked "$@"   -h/--help as the first argument prints the calling script's header comment, exits 0
#   run CMD...           runs CMD; with DRY_RUN=1 only prints it (how CI checks the scripts' commands)
# ROOT is the repository root (the scripts run from any folder); PYTHON (python3) and TORCHRUN (torchrun) pick the
# launchers.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCHRUN=${TORCHRUN:-torchrun}

help_if_asked() {
    case "${1:-}" in
        -h | --help)
            sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"
            exit 0
            ;;
    esac
}

run() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        printf '%q ' "$@"
        echo
    else
        "$@"
    fi
}
