#!/usr/bin/env bash
# Set up everything boxlite needs on a Debian 12 (bookworm) x86_64 host, then provision it:
#   1. the Debian packages (QEMU, qemu-img, mmdebstrap, e2fsprogs, the kernel source and its build tools, passt;
#      Chromium and a font for the JupyterLab browser test, which drives Debian's chromium through Playwright
#      rather than a browser that `playwright install` would download),
#   2. this package with its development extras (pip, editable),
#   3. `boxlite setup`: the guest kernel, the guest root, the vsock device and the default image (cached
#      under ~/.boxlite or $BOXLITE_HOME; the first run takes about 8 minutes on 2 cores, later runs seconds),
#   4. the built-in CodeBox image and the "BoxLite Python" Jupyter kernelspec.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 qemu-utils mmdebstrap e2fsprogs linux-source-6.1 bc flex bison libelf-dev libssl-dev
          make gcc binutils xz-utils ca-certificates passt chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "setup: installing boxlite (pip, editable, with dev extras)"
python3 -m pip install -q -e '.[dev]'

python3 -m boxlite.cli setup
# The CodeBox image (the BoxLite Python kernel's and CodeBox's default) is built now rather than by the first
# notebook (about 3 minutes once, cached after).
python3 -m boxlite.cli images build
# The "BoxLite Python" Jupyter kernel, where this Python's Jupyter looks for kernels.
python3 -m codebox_kernel install --sys-prefix
