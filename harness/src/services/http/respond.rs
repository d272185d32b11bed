//! What the HTTP server answers to one request: pure, the file system read for the file's
//! size and the roots' listing only. The wire is hyper's ([`super::serve`]).

use std::path::{Path, PathBuf};

use crate::services::tftp::{resolve_in, PathError};

/// Most names a 404 lists of what the root holds.
const LISTED: usize = 40;

/// A response's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Nothing (HEAD, 206/416 headers only, 405).
    Empty,
    /// A short text (an error's explanation).
    Text(String),
    /// `len` bytes of `path` from `start`.
    File { path: PathBuf, start: u64, len: u64 },
}

/// The status, headers and body of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// The request's path, decoded, for the lab's events.
    pub path: String,
}

impl Plan {
    fn text(status: u16, path: &str, text: String) -> Self {
        let headers = vec![("content-type", "text/plain; charset=utf-8".to_owned()), ("content-length", text.len().to_string())];
        Plan { status, headers, body: Body::Text(text), path: path.to_owned() }
    }

    /// How many body bytes the response carries (HEAD: none).
    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Text(t) => t.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

/// The answer to `method` on `target` (the request line's path, percent-encoded, maybe with
/// a query) with the `Range` header `range`, from the first of `roots` that has the file.
/// GET and HEAD only (405 else); a path out of the roots (`..`, a symlink out) is 403; a
/// missing file is 404, listing what the roots hold. A single byte range gets 206, one past
/// the end 416; a `Range` that does not parse is ignored (RFC 9110 §14.2), and several
/// ranges get the whole file.
pub fn respond(roots: &[PathBuf], method: &str, target: &str, range: Option<&str>) -> Plan {
    let raw = target.split(['?', '#']).next().unwrap_or_default();
    let path = percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned();
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut plan = Plan::text(405, &path, format!("{method} is not served here: a boot server answers GET and HEAD\n"));
            plan.headers.push(("allow", "GET, HEAD".to_owned()));
            return plan;
        }
    };
    if path.contains('\0') || !path.starts_with('/') {
        return Plan::text(400, &path, "the path must start with /\n".to_owned());
    }
    let file = match resolve_in(roots, &path) {
        Ok(file) => file,
        Err(e @ (PathError::ParentDir(_) | PathError::Escapes(_))) => return Plan::text(403, &path, format!("{e}\n")),
        Err(e) => return Plan::text(404, &path, format!("{e}; the HTTP root holds:\n{}", listing(roots))),
    };
    let size = match std::fs::metadata(&file) {
        Ok(m) => m.len(),
        Err(e) => return Plan::text(404, &path, format!("{path}: {e}\n")),
    };
    let mut headers = vec![("content-type", content_type(&file).to_owned()), ("accept-ranges", "bytes".to_owned())];
    let (status, start, len) = match range.map(http_range_header::parse_range_header) {
        // A Range that does not parse is ignored: the whole file.
        None | Some(Err(_)) => (200, 0, size),
        Some(Ok(parsed)) => match parsed.validate(size) {
            Ok(ranges) if ranges.len() == 1 => {
                let (first, last) = (*ranges[0].start(), *ranges[0].end());
                headers.push(("content-range", format!("bytes {first}-{last}/{size}")));
                (206, first, last - first + 1)
            }
            Ok(_) => (200, 0, size),
            Err(_) => {
                let mut plan = Plan::text(416, &path, format!("{path} has {size} bytes: the range {} is past its end\n", range.unwrap_or_default()));
                plan.headers.push(("content-range", format!("bytes */{size}")));
                return plan;
            }
        },
    };
    headers.push(("content-length", len.to_string()));
    let body = match head {
        true => Body::Empty,
        false => Body::File { path: file, start, len },
    };
    Plan { status, headers, body, path }
}

/// The files under `roots` (relative, `/`-separated, sorted), at most [`LISTED`].
fn listing(roots: &[PathBuf]) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(root, &path, out),
                Ok(_) => out.extend(path.strip_prefix(root).ok().map(|p| format!("  /{}", p.display()))),
                Err(_) => {}
            }
            if out.len() > 10 * LISTED {
                return;
            }
        }
    }
    let mut names = Vec::new();
    for root in roots {
        walk(root, root, &mut names);
    }
    names.sort();
    names.dedup();
    let more = names.len().saturating_sub(LISTED);
    names.truncate(LISTED);
    if more > 0 {
        names.push(format!("  … and {more} more"));
    }
    names.join("\n") + "\n"
}

/// A content type by the file's name: what a firmware or iPXE cares about.
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("efi") => "application/efi",
        Some("ipxe" | "cfg" | "txt" | "conf") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root/nixos")).unwrap();
        std::fs::write(dir.path().join("root/nixos/bzImage"), b"0123456789").unwrap();
        std::fs::write(dir.path().join("root/netboot.ipxe"), b"#!ipxe\nboot\n").unwrap();
        std::fs::write(dir.path().join("root/with space"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("root/out")).unwrap();
        dir
    }

    fn header<'a>(plan: &'a Plan, name: &str) -> Option<&'a str> {
        plan.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_file_is_served_whole_with_its_length_and_head_sends_no_body() {
        let dir = tree();
        let roots = [dir.path().join("root")];
        let get = respond(&roots, "GET", "/nixos/bzImage?x=1", None);
        assert_eq!(get.status, 200);
        assert_eq!(header(&get, "content-length"), Some("10"));
        assert_eq!(header(&get, "accept-ranges"), Some("bytes"));
        assert!(matches!(&get.body, Body::File { start: 0, len: 10, .. }), "{get:?}");
        let head = respond(&roots, "HEAD", "/nixos/bzImage", None);
        assert_eq!((head.status, header(&head, "content-length"), &head.body), (200, Some("10"), &Body::Empty));
        assert_eq!(respond(&roots, "GET", "/with%20space", None).status, 200, "percent-decoded");
        assert_eq!(header(&respond(&roots, "GET", "/netboot.ipxe", None), "content-type"), Some("text/plain; charset=utf-8"));
    }

    #[test]
    fn a_single_range_is_partial_and_one_past_the_end_is_refused() {
        let dir = tree();
        let roots = [dir.path().join("root")];
        let part = respond(&roots, "GET", "/nixos/bzImage", Some("bytes=2-5"));
        assert_eq!((part.status, header(&part, "content-range"), header(&part, "content-length")), (206, Some("bytes 2-5/10"), Some("4")));
        assert!(matches!(&part.body, Body::File { start: 2, len: 4, .. }));
        let tail = respond(&roots, "GET", "/nixos/bzImage", Some("bytes=-3"));
        assert_eq!((tail.status, header(&tail, "content-range")), (206, Some("bytes 7-9/10")));
        let open = respond(&roots, "GET", "/nixos/bzImage", Some("bytes=8-"));
        assert_eq!(header(&open, "content-range"), Some("bytes 8-9/10"));
        let past = respond(&roots, "GET", "/nixos/bzImage", Some("bytes=10-20"));
        assert_eq!((past.status, header(&past, "content-range")), (416, Some("bytes */10")));
        assert_eq!(respond(&roots, "GET", "/nixos/bzImage", Some("bytes=oops")).status, 200, "a Range that does not parse is ignored");
        assert_eq!(respond(&roots, "GET", "/nixos/bzImage", Some("bytes=0-1,4-5")).status, 200, "several ranges: the whole file");
    }

    #[test]
    fn paths_out_of_the_root_missing_files_and_other_methods_are_refused() {
        let dir = tree();
        let roots = [dir.path().join("root")];
        assert_eq!(respond(&roots, "GET", "/../secret", None).status, 403);
        assert_eq!(respond(&roots, "GET", "/nixos/%2e%2e/%2e%2e/secret", None).status, 403, "encoded ..");
        assert_eq!(respond(&roots, "GET", "/out", None).status, 403, "a symlink out of the root");
        assert_eq!(respond(&roots, "GET", "nixos/bzImage", None).status, 400);
        assert_eq!(respond(&roots, "GET", "/nixos/bzImage%00", None).status, 400);
        let missing = respond(&roots, "GET", "/nixos/initrd", None);
        assert_eq!(missing.status, 404);
        let Body::Text(text) = &missing.body else { panic!("{missing:?}") };
        assert!(text.contains("/nixos/bzImage") && text.contains("/netboot.ipxe"), "lists the root: {text}");
        assert_eq!(respond(&roots, "GET", "/nixos", None).status, 404, "a directory is no file");
        let post = respond(&roots, "POST", "/nixos/bzImage", None);
        assert_eq!((post.status, header(&post, "allow")), (405, Some("GET, HEAD")));
    }
}
