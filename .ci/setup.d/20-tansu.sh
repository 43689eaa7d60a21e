# Installs tansu 0.6.0 (a Kafka-protocol broker with schema validation) for the Kafka
# end-to-end tests and benches, and exports CORRAL_TEST_TANSU. A debug build keeps the
# install to a few minutes on 2 cores; an existing 0.6.0 in ~/.cargo/bin is reused.
tansu_bin="${HOME}/.cargo/bin/tansu"
if [ -x "$tansu_bin" ] && "$tansu_bin" --version 2>/dev/null | grep -q '0\.6\.0'; then
    echo "tansu: reusing $("$tansu_bin" --version)"
else
    # Its own target dir, kept between runs, so a reinstall only relinks.
    CARGO_TARGET_DIR="${HOME}/.cache/corral-ci/tansu-target" \
        CARGO_PROFILE_DEV_DEBUG=0 \
        cargo install tansu --version 0.6.0 --locked --features dynostore --debug --force
fi
export CORRAL_TEST_TANSU="$tansu_bin"
