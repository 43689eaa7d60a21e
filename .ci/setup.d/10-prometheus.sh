# Installs Debian's `prometheus` package (promtool and the server) for the Prometheus
# exposition tests, and exports CORRAL_TEST_PROMTOOL and CORRAL_TEST_PROMETHEUS.
# The tests start their own server on an ephemeral port; the packaged service must not run
# (it would hold 9090 and scrape nothing useful), so service starts are refused while the
# package installs.
if [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ]; then
    echo "prometheus: reusing $(/usr/bin/promtool --version 2>&1 | head -n 1)"
else
    (
        set -euo pipefail
        # policy-rc.d exit 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke then
        # skip starting the service. An existing policy (container images often have one)
        # is left as it is.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    )
    echo "prometheus: installed $(/usr/bin/promtool --version 2>&1 | head -n 1)"
fi
export CORRAL_TEST_PROMTOOL=/usr/bin/promtool
export CORRAL_TEST_PROMETHEUS=/usr/bin/prometheus
