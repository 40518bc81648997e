#!/usr/bin/env bash
# The pure-Python and in-process test tiers on the oldest and newest supported
# Pythons (3.10 and 3.13), found through pyenv. The real-kernel, browser and
# headless tiers run on the main Python only (`make test`). Each Python gets its
# own virtualenv (.venv-3.10, .venv-3.13), made and installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${PYENV_ROOT:-$HOME/.pyenv}"
status=0
for minor in 3.10 3.13; do
    python=$(ls -d "$root"/versions/"$minor".*/bin/python"$minor" 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$python" ]; then
        python=$(command -v "python$minor" || true)
    fi
    if [ -z "$python" ]; then
        if [ -n "${CI:-}" ]; then
            echo "python$minor is missing (pyenv install $minor)" >&2
            status=1
        else
            echo "python$minor is not installed: its tier is skipped" >&2
        fi
        continue
    fi
    venv=".venv-$minor"
    if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
        "$python" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --upgrade pip
        "$venv/bin/python" -m pip install --quiet -e '.[test]'
        touch "$venv/.installed"
    fi
    echo "== Python $minor: pure-Python and in-process tiers"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        tests/core tests/storage tests/sharing tests/notebook tests/test_config.py tests/test_cli.py awaitly_nb \
        --ignore tests/notebook/test_widget_browser.py \
        --ignore tests/notebook/test_edit_and_replay.py \
        --ignore tests/notebook/test_headless_runs.py \
        --ignore tests/notebook/test_wrapped_notebooks.py \
        --ignore tests/notebook/test_async_service.py \
        --ignore tests/notebook/test_real_kernel.py || status=1
done
exit $status
