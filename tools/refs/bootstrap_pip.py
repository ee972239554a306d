"""Installs pip into a virtualenv made with `python3 -m venv --without-pip`.

Debian's python3 ships the venv module without ensurepip unless python3-venv is installed, and
without pip; then `python3 -m venv` cannot bootstrap pip. This helper (standard library only)
downloads one pinned pip wheel from the package index, checks its sha256, and lets that wheel
install itself into the venv (a wheel of pip runs straight from the zip).

usage: python3 tools/refs/bootstrap_pip.py VENV_PYTHON
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request

WHEEL = "pip-25.3.post1-py3-none-any.whl"
URL = (
    "https://files.pythonhosted.org/packages/4f/f6/"
    "d7a56ffcf84a791383a22bc745762ce7760bdf5d5909f2ff220f7dc50cac/" + WHEEL
)
SHA256 = "9acc770865f1bb91cc61c2952e25ce654b0c8b9806f53b89687a916a4f6a180e"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    venv_python = sys.argv[1]
    with urllib.request.urlopen(URL, timeout=120) as r:
        data = r.read()
    got = hashlib.sha256(data).hexdigest()
    if got != SHA256:
        print(f"bootstrap_pip: {URL}: sha256 {got}, expected {SHA256}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        wheel = os.path.join(tmp, WHEEL)
        with open(wheel, "wb") as f:
            f.write(data)
        # `python pip.whl/pip install pip.whl`: pip runs from its own wheel.
        cmd = [venv_python, os.path.join(wheel, "pip"), "install", "--quiet", "--no-index", wheel]
        return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
