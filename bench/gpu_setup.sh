#!/usr/bin/env bash
# Offline setup of the remote GPU machine (no network), from the bundle in .carry/.
# Run from the repository root, as root:   bash bench/gpu_setup.sh
# then:                                    export PYTHONPATH=/tmp/site:$PWD
#
# .carry/deb/*.deb      espeak-ng 1.51 (Debian 12 amd64), unpacked with `dpkg -x` into / (never dpkg -i)
# .carry/stub/          no-op libpcaudio.so.0, used when the machine lacks libasound2/libpulse0
#                       (pcaudio is only for audio playback; `espeak-ng --stdout`/`-w` never touch it)
# .carry/fortunes/      /usr/share/games/fortunes text files (no .dat indexes);
# .carry/fortunes.links its symlinks, re-made here in case the copy to the machine dropped them
# .carry/whl/*.whl      cp312 manylinux wheels, installed with --no-deps into /tmp/site: soundfile soxr
#                       lhotse jiwer audiomentations and those of their requirements the machine's
#                       /opt/torch/.venv lacks (it has torch, numpy, scipy, numba, scikit-learn,
#                       joblib, msgpack, lazy-loader, cloudpickle, click, toolz, ... as of 2026-11)
#
# Idempotent; prints one status line and the PYTHONPATH hint, errors go to stderr.
# Overrides (for testing elsewhere): GPU_SETUP_ROOT (default /), GPU_SETUP_SITE (default /tmp/site),
# PYTHON (default python3), CARRY (default .carry).
set -euo pipefail

CARRY=${CARRY:-.carry}
ROOT=${GPU_SETUP_ROOT:-/}
ROOT=${ROOT%/}                      # "" for /
SITE=${GPU_SETUP_SITE:-/tmp/site}
PY=${PYTHON:-python3}
LIBDIR=$ROOT/usr/lib/x86_64-linux-gnu
FORTUNES=$ROOT/usr/share/games/fortunes

die() { echo "gpu_setup: $*" >&2; exit 1; }
[[ $SITE == /?* ]] || die "GPU_SETUP_SITE must be an absolute path below /, not '$SITE'"

[[ -d $CARRY/whl && -d $CARRY/deb ]] || die "no $CARRY/whl or $CARRY/deb here (run from the repo root, with .carry)"
[[ $(uname -m) == x86_64 ]] || die "this bundle is for x86_64, not $(uname -m)"

# --- espeak-ng from .debs ------------------------------------------------------------------------
unpack_deb() {  # dpkg -x when there is one, else a Python reading of the ar + data.tar.xz
    if command -v dpkg >/dev/null 2>&1; then
        dpkg -x "$1" "${ROOT:-/}"
    else
        "$PY" - "$1" "${ROOT:-/}" <<'EOF'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
with open(deb, "rb") as f:
    assert f.read(8) == b"!<arch>\n", deb
    while hdr := f.read(60):
        name, size = hdr[:16].decode().strip().rstrip("/"), int(hdr[48:58])
        body = f.read(size)
        f.read(size % 2)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as t:
                t.extractall(dest, filter="tar")
            break
    else:
        sys.exit(f"no data.tar in {deb}")
EOF
    fi
}
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
refresh_ld() { if [[ -z $ROOT ]]; then "$LDCONFIG"; fi; }
have_lib() { [[ $ld_cache == *$'\t'"$1 ("* ]]; }   # (no `ldconfig -p | grep -q`: SIGPIPE + pipefail)
install_pcaudio_stub() {
    rm -f "$LIBDIR/libpcaudio.so.0" "$LIBDIR/libpcaudio.so.0.0.1"
    install -m 0755 "$CARRY/stub/libpcaudio.so.0" "$LIBDIR/libpcaudio.so.0.0.1"
    ln -s libpcaudio.so.0.0.1 "$LIBDIR/libpcaudio.so.0"
}
espeak_missing_libs() {  # sonames the unpacked espeak-ng cannot resolve (none: empty output)
    LD_LIBRARY_PATH=$LIBDIR ldd "$ROOT/usr/bin/espeak-ng" 2>/dev/null | awk '/not found/ {print $1}'
}

ld_cache=$("$LDCONFIG" -p 2>/dev/null || true)
for deb in "$CARRY"/deb/*.deb; do
    case ${deb##*/} in libpcaudio0_*) continue ;; esac
    unpack_deb "$deb"
done
# The real libpcaudio links libasound.so.2, libpulse.so.0 and libpulse-simple.so.0 (and through
# libpulse ~25 more: X11, dbus, systemd, sndfile...). Use it only if the machine already has those.
if have_lib libasound.so.2 && have_lib libpulse.so.0 && have_lib libpulse-simple.so.0; then
    unpack_deb "$CARRY"/deb/libpcaudio0_*.deb
    refresh_ld
    if [[ -n $(espeak_missing_libs) ]]; then install_pcaudio_stub; refresh_ld; fi
else
    install_pcaudio_stub
    refresh_ld
fi
missing=$(espeak_missing_libs || true)
[[ -z $missing ]] || die "espeak-ng still lacks: $missing"

# --- fortune text --------------------------------------------------------------------------------
mkdir -p "$FORTUNES"
cp -a --remove-destination "$CARRY/fortunes/." "$FORTUNES/"
if [[ -f $CARRY/fortunes.links ]]; then
    while IFS=$'\t' read -r link target; do
        [[ -e $FORTUNES/$link || -L $FORTUNES/$link ]] || ln -s "$target" "$FORTUNES/$link"
    done <"$CARRY/fortunes.links"
fi

# --- Python wheels into $SITE (built afresh beside it, then swapped in: no stale leftovers) -------
rm -rf "$SITE.new"
mkdir -p "$SITE.new"
if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE.new" \
        --disable-pip-version-check --root-user-action=ignore "$CARRY"/whl/*.whl
else  # a venv without pip (uv makes those): a wheel is a zip; none of these has a .data dir
    "$PY" - "$SITE.new" "$CARRY"/whl/*.whl <<'EOF'
import sys, zipfile
for whl in sys.argv[2:]:
    with zipfile.ZipFile(whl) as z:
        z.extractall(sys.argv[1])
EOF
fi
rm -rf "$SITE"
mv "$SITE.new" "$SITE"

# --- smoke checks --------------------------------------------------------------------------------
if [[ -z $ROOT ]]; then
    nbytes=$(espeak-ng -v es --stdout hola | wc -c) || die "espeak-ng -v es --stdout hola failed"
else
    nbytes=$(ESPEAK_DATA_PATH=$LIBDIR LD_LIBRARY_PATH=$LIBDIR "$ROOT/usr/bin/espeak-ng" -v es --stdout hola | wc -c) \
        || die "espeak-ng -v es --stdout hola failed"
fi
((nbytes > 1000)) || die "espeak-ng -v es --stdout hola gave only $nbytes bytes"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
PYTHONPATH=$SITE "$PY" -c 'import soundfile, soxr, lhotse, jiwer, audiomentations' >"$log" 2>&1 \
    || { cat "$log" >&2; die "python imports failed (PYTHONPATH=$SITE)"; }
PYTHONPATH=$SITE "$PY" -c 'import numba' >/dev/null 2>&1 \
    || echo "gpu_setup: note: no numba here, so librosa-backed audiomentations transforms" \
        "(Resample, AirAbsorption, Trim) are unavailable" >&2

echo "gpu_setup: ok (espeak-ng es: $nbytes bytes of wav; soundfile soxr lhotse jiwer audiomentations import)"
echo "export PYTHONPATH=$SITE:$PWD"
