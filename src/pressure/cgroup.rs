//! Finding scatter's own cgroup v2 directory (`--pressure-source cgroup`):
//! the `0::` line of `/proc/self/cgroup`, under the cgroup2 mount of
//! `/proc/self/mountinfo` whose root holds it. That mount is
//! `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a hybrid
//! one, and inside a cgroup namespace or a container whatever the mount
//! table says. Both files are the kernel's, read with the same bounds as
//! every other file scatter reads.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use super::{MAX_FILE, PRESSURE_DIRS};
use crate::display::quoted;
use crate::exit::Fatal;
use crate::safedir::SafeDir;

/// The most of `/proc/self/mountinfo` that is read: thousands of mounts.
const MAX_MOUNTINFO: u64 = 4 << 20;

/// scatter's own cgroup v2 directory.
pub(super) fn own_cgroup_dir() -> Result<PathBuf> {
    let hint = "--pressure-source cgroup needs cgroup v2 (the unified hierarchy); use --pressure-source system or --max-load LOAD";
    let proc_self = SafeDir::for_reading(Path::new("/proc/self"), PRESSURE_DIRS)?
        .ok_or_else(|| Fatal::usage("/proc is not mounted").hint(hint))?;
    let read = |name: &str, limit: u64| -> Result<Vec<u8>> {
        Ok(proc_self
            .read(OsStr::new(name), "process file", limit)
            .map_err(anyhow::Error::from)?
            .unwrap_or_default())
    };
    let cgroup = read("cgroup", MAX_FILE)?;
    let path = own_cgroup(&cgroup).ok_or_else(|| {
        Fatal::usage("scatter is in no cgroup v2 (/proc/self/cgroup has no \"0::\" line)")
            .hint(hint)
    })?;
    let mounts = cgroup2_mounts(&read("mountinfo", MAX_MOUNTINFO)?);
    cgroup_dir(&path, &mounts).ok_or_else(|| {
        Fatal::usage(format!(
            "no cgroup2 mount shows scatter's cgroup {}",
            quoted(&path)
        ))
        .hint(hint)
        .into()
    })
}

/// The path of the `0::` line of `/proc/self/cgroup`, if it is one.
pub fn own_cgroup(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    path.starts_with('/').then(|| path.to_string())
}

/// The cgroup2 mounts of `/proc/self/mountinfo`, as (root, mount point).
pub fn cgroup2_mounts(bytes: &[u8]) -> Vec<(String, PathBuf)> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
            let (before, after) = line.split_once(" - ")?;
            if after.split_ascii_whitespace().next()? != "cgroup2" {
                return None;
            }
            let fields: Vec<&str> = before.split(' ').collect();
            let root = unescape(fields.get(3)?)?;
            let point = unescape(fields.get(4)?)?;
            Some((root, PathBuf::from(point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Option<String> {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let code = field.get(i + 1..i + 4)?;
            out.push(u8::from_str_radix(code, 8).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The directory of cgroup `path` under the cgroup2 mount whose root holds
/// it (the deepest such root). `None` for a path outside every mount (a
/// cgroup namespace shows those as `/../..`) or one that is not plain.
pub fn cgroup_dir(path: &str, mounts: &[(String, PathBuf)]) -> Option<PathBuf> {
    let plain = |p: &Path| {
        p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    };
    let path = Path::new(path);
    if !plain(path) {
        return None;
    }
    mounts
        .iter()
        .filter(|(root, point)| plain(Path::new(root)) && plain(point))
        .filter_map(|(root, point)| {
            let rest = path.strip_prefix(root).ok()?;
            let dir = if rest.as_os_str().is_empty() {
                point.clone()
            } else {
                point.join(rest)
            };
            Some((Path::new(root).components().count(), dir))
        })
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, dir)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_is_the_unified_line() {
        let v1_and_v2 = b"9:name=systemd:/\n4:memory:/x\n0::/system.slice/cron.service\n";
        assert_eq!(
            own_cgroup(v1_and_v2).as_deref(),
            Some("/system.slice/cron.service")
        );
        assert_eq!(own_cgroup(b"4:memory:/x\n1:cpu:/\n"), None);
        assert_eq!(own_cgroup(b"0::relative\n"), None);
    }

    #[test]
    fn cgroup2_mounts_are_found_and_unescaped() {
        let mountinfo = b"\
25 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
50 1 0:38 /lxc/c1 /mnt/with\\040space rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mounts(mountinfo),
            vec![
                ("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified")),
                ("/lxc/c1".to_string(), PathBuf::from("/mnt/with space")),
            ]
        );
    }

    #[test]
    fn the_cgroup_directory_is_under_the_deepest_mount_that_holds_it() {
        let mounts = vec![
            ("/".to_string(), PathBuf::from("/sys/fs/cgroup/unified")),
            ("/lxc/c1".to_string(), PathBuf::from("/sys/fs/cgroup")),
        ];
        assert_eq!(
            cgroup_dir("/", &mounts[..1]),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup_dir("/system.slice/cron.service", &mounts),
            Some(PathBuf::from(
                "/sys/fs/cgroup/unified/system.slice/cron.service"
            ))
        );
        assert_eq!(
            cgroup_dir("/lxc/c1/app", &mounts),
            Some(PathBuf::from("/sys/fs/cgroup/app"))
        );
        // Outside the namespace's view, or not a plain path: never joined.
        assert_eq!(cgroup_dir("/../..", &mounts), None);
        assert_eq!(cgroup_dir("/a/../../etc", &mounts), None);
        assert_eq!(cgroup_dir("/x", &[]), None);
        let odd = vec![("/../x".to_string(), PathBuf::from("/sys/fs/cgroup"))];
        assert_eq!(cgroup_dir("/../x/y", &odd), None);
    }

    #[test]
    fn own_cgroup_resolves_on_this_machine_when_it_has_cgroup_v2() {
        let cgroup = std::fs::read("/proc/self/cgroup").unwrap();
        if own_cgroup(&cgroup).is_none() {
            eprintln!("skipped: no cgroup v2 here");
            return;
        }
        let dir = own_cgroup_dir().unwrap();
        assert!(dir.join("cgroup.procs").is_file(), "{dir:?}");
        let me = std::process::id().to_string();
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|p| p == me), "{dir:?}: {procs}");
    }
}
