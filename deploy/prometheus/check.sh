#!/usr/bin/env bash
# Validates the Prometheus assets: config, rules and the rule unit tests.
# Needs promtool (Debian package prometheus; `make setup-test` installs it).
set -euo pipefail
cd "$(dirname "$0")"
command -v promtool >/dev/null || { echo "promtool is missing: run 'make setup-test'" >&2; exit 1; }
promtool check config prometheus.yml
promtool check rules recording_rules.yml alert_rules.yml
promtool test rules tests/recording_rules_test.yml tests/alert_rules_test.yml
