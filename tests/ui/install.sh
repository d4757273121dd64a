#!/usr/bin/env bash
# install.sh - installs the browser tests' npm packages (package-lock.json:
# playwright-core only) into tests/ui/node_modules with `npm ci`. Does
# nothing when the locked version is already there, so tests can call it
# every run; non-interactive, for CI on a fresh clone. The browser is
# Debian's chromium (deploy/local/install-deps.sh); nothing is downloaded
# but the npm package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v node >/dev/null || { echo "tests/ui/install.sh: node (>= 20) is not on PATH" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 20)); then
  echo "tests/ui/install.sh: node $(node --version) is too old: playwright-core needs node >= 20" >&2
  exit 1
fi
want=$(node -p "require('./package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('./node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [[ $want == "$have" ]]; then
  exit 0
fi
echo "tests/ui/install.sh: npm ci (playwright-core $want) into $(pwd)/node_modules"
npm ci --no-audit --no-fund --loglevel=error </dev/null
