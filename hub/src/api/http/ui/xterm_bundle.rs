//! xterm.js for the browser, made from Debian's packages at run time. bookworm's `libjs-xterm` ships
//! a stub `xterm.js` that `require`s the real modules, which `node-xterm` installs as CommonJS files;
//! browsers cannot load those directly. So the hub wraps each module (tests left out) in a function,
//! adds a tiny `require`, and serves the result as one script that defines `Terminal` and the fit
//! addon. Nothing of xterm.js is kept in this repository.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The loader: module table, path resolution relative to the requiring module, a cache.
const LOADER_HEAD: &str = r#"(function () {
"use strict";
var defs = {}, cache = {};
function resolve(from, path) {
  if (path.charAt(0) !== ".") return path;
  var parts = from.split("/"); parts.pop();
  path.split("/").forEach(function (p) {
    if (p === "..") parts.pop(); else if (p !== "." && p !== "") parts.push(p);
  });
  var name = parts.join("/").replace(/\.js$/, "");
  return defs[name] || !defs[name + "/index"] ? name : name + "/index";
}
function load(name) {
  if (cache[name]) return cache[name].exports;
  if (!defs[name]) throw new Error("xterm bundle: no module " + name);
  var module = { exports: {} };
  cache[name] = module;
  defs[name].call(module.exports, function (p) { return load(resolve(name, p)); }, module, module.exports);
  return module.exports;
}
"#;

const LOADER_TAIL: &str = r#"window.Terminal = load("public/Terminal").Terminal;
window.fit = load("addons/fit/fit");
})();
"#;

/// Every `.js` module under `dir` (recursively), test files excluded, as (module name, path).
fn modules(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if !file.ends_with(".js") || file.ends_with(".test.js") {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let name = rel
                .to_string_lossy()
                .trim_end_matches(".js")
                .replace('\\', "/");
            found.push((name, path));
        }
    }
    found.sort();
    Ok(found)
}

fn wrap(out: &mut String, name: &str, source: &str) {
    // Source-map comments would point the browser at files we do not serve.
    let body: Vec<&str> = source
        .lines()
        .filter(|l| !l.starts_with("//# sourceMappingURL="))
        .collect();
    let _ = write!(
        out,
        "defs[{}] = function (require, module, exports) {{\n{}\n}};\n",
        serde_json::Value::String(name.to_string()),
        body.join("\n")
    );
}

/// The browser bundle from node-xterm's `lib` directory and libjs-xterm's fit addon.
pub fn build(lib_dir: &Path, fit_js: &Path) -> Result<String, String> {
    let found = modules(lib_dir).map_err(|e| format!("{}: {e}", lib_dir.display()))?;
    if !found.iter().any(|(name, _)| name == "public/Terminal") {
        return Err(format!(
            "{} has no public/Terminal.js (install Debian's node-xterm)",
            lib_dir.display()
        ));
    }
    let mut out = String::from(LOADER_HEAD);
    for (name, path) in &found {
        let source =
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        wrap(&mut out, name, &source);
    }
    let fit = std::fs::read_to_string(fit_js).map_err(|e| format!("{}: {e}", fit_js.display()))?;
    wrap(&mut out, "addons/fit/fit", &fit);
    out.push_str(LOADER_TAIL);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_wrapped_by_name_and_tests_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        std::fs::create_dir_all(lib.join("public")).unwrap();
        std::fs::write(
            lib.join("public/Terminal.js"),
            "exports.Terminal = require(\"../Core\").Core;\n//# sourceMappingURL=Terminal.js.map",
        )
        .unwrap();
        std::fs::write(lib.join("Core.js"), "exports.Core = 1;").unwrap();
        std::fs::write(lib.join("Core.test.js"), "require(\"chai\");").unwrap();
        let fit = dir.path().join("fit.js");
        std::fs::write(&fit, "exports.apply = function () {};").unwrap();
        let js = build(&lib, &fit).unwrap();
        assert!(js.contains("defs[\"public/Terminal\"]"), "{js}");
        assert!(js.contains("defs[\"Core\"]"));
        assert!(js.contains("defs[\"addons/fit/fit\"]"));
        assert!(!js.contains("chai"));
        assert!(!js.contains("sourceMappingURL"));
        assert!(build(&dir.path().join("nothing"), &fit).is_err());
    }
}
