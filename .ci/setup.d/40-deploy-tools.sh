# Validators for the deploy files (tests/deploy.rs): systemd-analyze and systemd-sysusers
# (Debian's `systemd` package) for the unit, curl for deploy/dcos/statsd-env.sh, and in the
# shared Python venv jsonschema, chevron (mustache), kubernetes-validate (bundled Kubernetes
# OpenAPI schemas), dockerfile-parse and PyYAML for deploy/validate.py.
# Exports CORRAL_TEST_SYSTEMD_ANALYZE and CORRAL_TEST_DEPLOY_PYTHON.
deploy_debs=""
command -v systemd-analyze >/dev/null 2>&1 || deploy_debs="systemd"
command -v curl >/dev/null 2>&1 || deploy_debs="$deploy_debs curl"
if [ -z "$deploy_debs" ]; then
    echo "systemd-analyze, curl: reusing $(systemd-analyze --version | head -n 1)"
else
    (
        set -euo pipefail
        # The package's maintainer scripts must not try to start or enable anything.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $deploy_debs >/dev/null
    )
    echo "installed:$deploy_debs ($(systemd-analyze --version | head -n 1))"
fi
CORRAL_TEST_SYSTEMD_ANALYZE="$(command -v systemd-analyze)"
export CORRAL_TEST_SYSTEMD_ANALYZE

deploy_venv="${HOME}/.cache/corral-ci/venv"
deploy_pins="jsonschema==4.26.0 chevron==0.14.0 kubernetes-validate==1.37.0 dockerfile-parse==2.0.1 PyYAML==6.0.3"
if [ -x "$deploy_venv/bin/python" ] && "$deploy_venv/bin/python" - $deploy_pins <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
    echo "deploy validators: reusing $deploy_venv"
else
    [ -x "$deploy_venv/bin/python" ] || python3 -m venv "$deploy_venv"
    # shellcheck disable=SC2086
    "$deploy_venv/bin/python" -m pip install --quiet --disable-pip-version-check $deploy_pins
    echo "deploy validators: installed $deploy_pins"
fi
export CORRAL_TEST_DEPLOY_PYTHON="$deploy_venv/bin/python"
