# A Python venv with an independent Kafka consumer and Avro reader (confluent-kafka, fastavro,
# and the codec libraries fastavro uses for snappy and zstandard blocks) for the Kafka and Avro
# tests; exports CORRAL_TEST_PYTHON.
venv="${HOME}/.cache/corral-ci/venv"
py_pins="confluent-kafka==2.16.1 fastavro==1.13.1 cramjam==2.14.0 backports.zstd==1.8.0"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - $py_pins <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
    echo "python venv: reusing $venv"
else
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $py_pins
fi
export CORRAL_TEST_PYTHON="$venv/bin/python"
