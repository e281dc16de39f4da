//! The task user, read from /etc/passwd and /etc/group by hand: a static binary in a scratch-like image has no NSS modules.

use std::path::{Path, PathBuf};

/// Who tasks run as, resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Supplementary groups from /etc/group, primary group included.
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("task user {0:?} is not in /etc/passwd")]
    NotFound(String),
}

/// One line of /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

pub fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split(':').collect();
    if fields.len() < 7 || fields[0].is_empty() {
        return None;
    }
    Some(PasswdEntry {
        name: fields[0].to_owned(),
        uid: fields[2].parse().ok()?,
        gid: fields[3].parse().ok()?,
        home: fields[5].to_owned(),
    })
}

/// Finds `spec` by name first, then (when it is a number) by uid, as `docker run --user` does.
pub fn find_user(passwd: &str, spec: &str) -> Option<PasswdEntry> {
    let entries: Vec<PasswdEntry> = passwd.lines().filter_map(parse_passwd_line).collect();
    if let Some(e) = entries.iter().find(|e| e.name == spec) {
        return Some(e.clone());
    }
    let uid: u32 = spec.parse().ok()?;
    entries.into_iter().find(|e| e.uid == uid)
}

/// Groups listing `user` as a member in /etc/group, plus the primary group, sorted and unique.
pub fn groups_of(group_file: &str, user: &str, primary: u32) -> Vec<u32> {
    let mut groups = vec![primary];
    for line in group_file.lines() {
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        if fields.len() < 4 {
            continue;
        }
        let Ok(gid) = fields[2].parse::<u32>() else {
            continue;
        };
        if fields[3].split(',').any(|m| m.trim() == user) {
            groups.push(gid);
        }
    }
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Resolves the task user from the given passwd and group files (the latter may be absent).
pub fn lookup_in(spec: &str, passwd: &Path, group: &Path) -> Result<TaskUser, UserError> {
    let passwd_text = std::fs::read_to_string(passwd).map_err(|source| UserError::Read {
        path: passwd.to_owned(),
        source,
    })?;
    let entry =
        find_user(&passwd_text, spec).ok_or_else(|| UserError::NotFound(spec.to_owned()))?;
    // A missing /etc/group only costs supplementary groups, which minimal images often lack anyway.
    let group_text = std::fs::read_to_string(group).unwrap_or_default();
    let groups = groups_of(&group_text, &entry.name, entry.gid);
    let home = if entry.home.is_empty() {
        "/".into()
    } else {
        entry.home.into()
    };
    Ok(TaskUser {
        name: entry.name,
        uid: entry.uid,
        gid: entry.gid,
        home,
        groups,
    })
}

pub fn lookup(spec: &str) -> Result<TaskUser, UserError> {
    lookup_in(spec, Path::new("/etc/passwd"), Path::new("/etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
agent:x:1000:1000:Agent,,,:/home/agent:/bin/sh
1001:x:1002:1002::/home/numeric:/bin/sh
nohome:x:1003:1003:::/bin/sh
";

    const GROUP: &str = "\
root:x:0:
docker:x:999:agent,other
wheel:x:10: other , agent
agent:x:1000:
bad:x:notanumber:agent
";

    #[test]
    fn finds_by_name() {
        let e = find_user(PASSWD, "agent").unwrap();
        assert_eq!((e.uid, e.gid, e.home.as_str()), (1000, 1000, "/home/agent"));
        assert_eq!(find_user(PASSWD, "root").unwrap().uid, 0);
    }

    #[test]
    fn finds_by_uid_after_name() {
        assert_eq!(find_user(PASSWD, "1000").unwrap().name, "agent");
        assert_eq!(find_user(PASSWD, "0").unwrap().name, "root");
        // A user literally named "1001" wins over uid 1001.
        assert_eq!(find_user(PASSWD, "1001").unwrap().uid, 1002);
    }

    #[test]
    fn missing_and_malformed() {
        assert!(find_user(PASSWD, "nobody").is_none());
        assert!(find_user(PASSWD, "4242").is_none());
        assert!(find_user(PASSWD, "broken line").is_none());
        assert!(parse_passwd_line("a:x:notnum:0::/:/bin/sh").is_none());
        assert!(parse_passwd_line("").is_none());
    }

    #[test]
    fn supplementary_groups() {
        assert_eq!(groups_of(GROUP, "agent", 1000), vec![10, 999, 1000]);
        assert_eq!(groups_of(GROUP, "root", 0), vec![0]);
        assert_eq!(groups_of("", "agent", 1000), vec![1000]);
    }

    #[test]
    fn lookup_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        let g = dir.path().join("group");
        std::fs::write(&p, PASSWD).unwrap();
        std::fs::write(&g, GROUP).unwrap();
        let u = lookup_in("agent", &p, &g).unwrap();
        assert_eq!(u.groups, vec![10, 999, 1000]);
        assert_eq!(u.home, PathBuf::from("/home/agent"));
        let u = lookup_in("nohome", &p, &dir.path().join("absent")).unwrap();
        assert_eq!(u.home, PathBuf::from("/"));
        assert_eq!(u.groups, vec![1003]);
        assert!(matches!(
            lookup_in("ghost", &p, &g),
            Err(UserError::NotFound(_))
        ));
        assert!(matches!(
            lookup_in("agent", &dir.path().join("nope"), &g),
            Err(UserError::Read { .. })
        ));
    }
}
