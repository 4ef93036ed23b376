use super::walk::*;
use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};

const PRIVATE: DirKind = DirKind {
    what: "test directory",
    flag: "--test-dir ",
    mode: 0o755,
    shared: false,
};
const SHARED: DirKind = DirKind {
    shared: true,
    ..PRIVATE
};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn err_text(err: anyhow::Error) -> String {
    let hint = crate::exit::fatal_of(&err)
        .and_then(|f| f.hint.clone())
        .unwrap_or_default();
    format!("{err:#} / hint: {hint}")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn the_symlink_rule_trusts_only_root_and_the_running_user() {
    let me = 1000;
    // Own or root's link, in an own or root's directory nobody else writes.
    assert_eq!(link_problem(me, me, 0o755, me), None);
    assert_eq!(link_problem(0, 0, 0o755, me), None);
    assert_eq!(link_problem(0, me, 0o700, me), None);
    // /var/lock -> /run/lock for root.
    assert_eq!(link_problem(0, 0, 0o40755, 0), None);
    // Another user's link, wherever it is.
    assert!(
        link_problem(65534, 0, 0o755, me)
            .unwrap()
            .contains("owned by uid 65534")
    );
    // A trusted link in another user's directory: they can replace it.
    assert!(
        link_problem(me, 65534, 0o755, me)
            .unwrap()
            .contains("uid 65534")
    );
    // A trusted link in a directory others can write to, sticky or not.
    for mode in [0o1777, 0o777, 0o775, 0o757] {
        let why = link_problem(0, 0, mode, me).unwrap();
        assert!(why.contains("other users can write"), "{mode:o}: {why}");
    }
}

#[test]
fn the_private_rule_wants_our_own_directory_that_nobody_else_writes() {
    assert_eq!(dir_problem(1000, 0o755, 1000), None);
    assert_eq!(dir_problem(0, 0o700, 0), None);
    // Root's directory is not a non-root user's own.
    assert_eq!(dir_problem(0, 0o755, 1000), Some(DirProblem::Owner(0)));
    assert_eq!(dir_problem(65534, 0o700, 0), Some(DirProblem::Owner(65534)));
    assert_eq!(
        dir_problem(0, 0o41777, 0),
        Some(DirProblem::Writable(0o1777))
    );
    assert_eq!(dir_problem(0, 0o775, 0), Some(DirProblem::Writable(0o775)));
}

#[test]
fn a_walk_creates_missing_components_with_the_mode_given() {
    let t = tmp();
    let path = t.path().join("a/b/c");
    let dir = SafeDir::create(
        &path,
        DirKind {
            mode: 0o750,
            ..PRIVATE
        },
    )
    .unwrap();
    assert_eq!(dir.path(), path);
    for p in [t.path().join("a"), path.clone()] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "{p:?}: {mode:o}");
    }
    // It is the directory: a file written through it lands there.
    dir.write_atomic(OsStr::new("x"), 0o644, |f| {
        use std::io::Write;
        f.write_all(b"hi")
    })
    .unwrap();
    assert_eq!(std::fs::read(path.join("x")).unwrap(), b"hi");
}

#[test]
fn a_walk_creates_a_deep_path() {
    let t = tmp();
    let deep: PathBuf = (0..2 * MAX_RETRIES).map(|i| i.to_string()).collect();
    let path = t.path().join(deep);
    assert_eq!(SafeDir::create(&path, PRIVATE).unwrap().path(), path);
    assert!(path.is_dir());
}

#[test]
fn existing_creates_nothing() {
    let t = tmp();
    let path = t.path().join("a/b");
    assert!(SafeDir::existing(&path, PRIVATE).unwrap().is_none());
    assert!(!t.path().join("a").exists());
    std::fs::create_dir_all(&path).unwrap();
    assert!(SafeDir::existing(&path, PRIVATE).unwrap().is_some());
    let d = SafeDir::existing(t.path(), PRIVATE).unwrap().unwrap();
    assert!(d.child(OsStr::new("nope")).unwrap().is_none());
    assert!(!t.path().join("nope").exists());
}

#[test]
fn a_directory_others_can_write_is_refused_unless_shared() {
    let t = tmp();
    let path = t.path().join("w");
    std::fs::create_dir(&path).unwrap();
    chmod(&path, 0o1777);
    let err = err_text(SafeDir::create(&path, PRIVATE).unwrap_err());
    assert!(
        err.contains("is group- or world-writable (mode 1777)"),
        "{err}"
    );
    assert!(err.contains("private subdirectory"), "{err}");
    assert!(SafeDir::create(&path, SHARED).is_ok());
    // The dry run's check refuses it the same way.
    assert!(SafeDir::existing(&path, PRIVATE).is_err());
}

#[test]
fn a_trusted_symlink_is_followed_relative_or_absolute() {
    let t = tmp();
    let real = t.path().join("real");
    std::fs::create_dir_all(real.join("inner")).unwrap();
    symlink("real", t.path().join("rel")).unwrap();
    symlink(&real, t.path().join("abs")).unwrap();
    symlink("../real/./inner", real.join("up")).unwrap();
    for via in ["rel/inner", "abs/inner", "real/up", "rel/up/../inner"] {
        let dir = SafeDir::create(&t.path().join(via), PRIVATE)
            .unwrap_or_else(|e| panic!("{via}: {}", err_text(e)));
        dir.write_atomic(
            OsStr::new(via.replace('/', "_").as_str()),
            0o644,
            |_| Ok(()),
        )
        .unwrap();
        assert!(
            real.join("inner").join(via.replace('/', "_")).exists(),
            "{via} did not lead to real/inner"
        );
    }
}

#[test]
fn a_symlink_in_a_directory_others_can_write_is_refused() {
    let t = tmp();
    let sticky = t.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    chmod(&sticky, 0o1777);
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    symlink(&target, sticky.join("link")).unwrap();
    let path = sticky.join("link/sub");
    let err = err_text(SafeDir::create(&path, PRIVATE).unwrap_err());
    assert!(
        err.contains("other users can write to (mode 1777)"),
        "{err}"
    );
    assert!(
        err.contains(&sticky.join("link").display().to_string()),
        "{err}"
    );
    assert!(!target.join("sub").exists(), "nothing created through it");
    // Shared directories are reached by the same rule.
    assert!(SafeDir::existing(&sticky.join("link"), SHARED).is_err());
}

#[test]
fn a_symlink_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to give a symlink to another user");
        return;
    }
    let t = tmp();
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let link = t.path().join("link");
    symlink(&target, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let err = err_text(SafeDir::existing(&link, PRIVATE).unwrap_err());
    assert!(err.contains("is a symlink owned by uid 65534"), "{err}");
    // And a directory of another user is not ours.
    std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    let err = err_text(SafeDir::existing(&target, PRIVATE).unwrap_err());
    assert!(err.contains("is owned by uid 65534, not by uid 0"), "{err}");
    assert!(SafeDir::existing(&target, SHARED).unwrap().is_some());
}

#[test]
fn symlink_loops_and_files_end_the_walk() {
    let t = tmp();
    symlink("b", t.path().join("a")).unwrap();
    symlink("a", t.path().join("b")).unwrap();
    let err = err_text(SafeDir::create(&t.path().join("a/x"), PRIVATE).unwrap_err());
    assert!(err.contains("more than 40 symlinks"), "{err}");
    std::fs::write(t.path().join("f"), "").unwrap();
    let err = err_text(SafeDir::create(&t.path().join("f/x"), PRIVATE).unwrap_err());
    assert!(err.contains("is not a directory (a regular file)"), "{err}");
    let err = err_text(SafeDir::create(Path::new("relative"), PRIVATE).unwrap_err());
    assert!(err.contains("not an absolute path"), "{err}");
}

#[test]
fn a_child_is_never_a_symlink() {
    let t = tmp();
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let base = t.path().join("base");
    std::fs::create_dir(&base).unwrap();
    symlink(&elsewhere, base.join("runs")).unwrap();
    let dir = SafeDir::create(&base, PRIVATE).unwrap();
    let err = err_text(dir.create_child(OsStr::new("runs")).unwrap_err());
    assert!(
        err.contains("runs is a symlink; refusing to follow it"),
        "{err}"
    );
    let err = err_text(dir.child(OsStr::new("runs")).unwrap_err());
    assert!(err.contains("is a symlink"), "{err}");
    let job = dir.create_child(OsStr::new("job")).unwrap();
    assert_eq!(job.path(), base.join("job"));
    assert!(dir.create_child(OsStr::new("../x")).is_err());
}

#[test]
fn files_scatter_writes_must_be_its_own_regular_files() {
    let t = tmp();
    let dir = SafeDir::create(t.path(), PRIVATE).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, t.path().join("link")).unwrap();
    std::fs::hard_link(&victim, t.path().join("hard")).unwrap();
    std::fs::create_dir(t.path().join("dir")).unwrap();
    rustix::fs::mknodat(
        &dir.fd,
        "fifo",
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let open = |name: &str, access| {
        dir.open_own(OsStr::new(name), "test file", access, 0o644)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(open("link", OFlags::RDWR).contains("is a symlink; refusing to follow it"));
    assert!(open("dir", OFlags::RDWR).contains("is a directory"));
    // Neither blocks: with a reader missing (ENXIO) or not.
    assert!(open("fifo", OFlags::WRONLY | OFlags::APPEND).contains("(a FIFO)"));
    assert!(open("fifo", OFlags::RDWR).contains("(a FIFO)"));
    assert!(open("hard", OFlags::RDWR).contains("has 2 hard links"));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let (_, meta) = dir
        .open_own(OsStr::new("new"), "test file", OFlags::RDWR, 0o600)
        .unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.mode() & 0o077, 0);
}

#[test]
fn reads_are_bounded_and_refuse_what_is_not_a_regular_file() {
    let t = tmp();
    let dir = SafeDir::for_reading(t.path(), PRIVATE).unwrap().unwrap();
    std::fs::write(t.path().join("small"), "12345").unwrap();
    assert_eq!(
        dir.read(OsStr::new("small"), "f", 5).unwrap().unwrap(),
        b"12345"
    );
    let err = dir
        .read(OsStr::new("small"), "f", 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than the 4 bytes scatter reads"), "{err}");
    assert!(dir.read(OsStr::new("missing"), "f", 9).unwrap().is_none());
    rustix::fs::mknodat(
        &dir.fd,
        "fifo",
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let err = dir
        .read(OsStr::new("fifo"), "f", 9)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(a FIFO)"), "{err}");
    symlink(t.path().join("small"), t.path().join("link")).unwrap();
    let err = dir
        .read(OsStr::new("link"), "f", 9)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a symlink"), "{err}");
    assert!(
        SafeDir::for_reading(&t.path().join("nope"), PRIVATE)
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_atomic_write_replaces_a_symlink_and_leaves_no_temporary_file() {
    let t = tmp();
    let dir = SafeDir::create(t.path(), PRIVATE).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, t.path().join("x.json")).unwrap();
    dir.write_atomic(OsStr::new("x.json"), 0o644, |f| {
        use std::io::Write;
        f.write_all(b"one")
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(t.path().join("x.json")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_eq!(std::fs::read(t.path().join("x.json")).unwrap(), b"one");
    // A failed fill leaves nothing behind and the old file in place.
    let err = dir
        .write_atomic(OsStr::new("x.json"), 0o644, |_| {
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
    assert!(format!("{err:#}").contains("boom"));
    assert_eq!(std::fs::read(t.path().join("x.json")).unwrap(), b"one");
    let names: Vec<_> = dir.entries().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        dir.write_atomic(OsStr::new("../escape"), 0o644, |_| Ok(()))
            .is_err()
    );
}

#[test]
fn removal_deletes_regular_files_only() {
    let t = tmp();
    let dir = SafeDir::create(t.path(), PRIVATE).unwrap();
    let victim = t.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    symlink(&victim, t.path().join("link")).unwrap();
    std::fs::create_dir(t.path().join("d")).unwrap();
    std::fs::write(t.path().join("f"), "").unwrap();
    assert!(!dir.remove_file(OsStr::new("link")).unwrap());
    assert!(!dir.remove_file(OsStr::new("d")).unwrap());
    assert!(!dir.remove_file(OsStr::new("gone")).unwrap());
    assert!(dir.remove_file(OsStr::new("f")).unwrap());
    assert!(std::fs::symlink_metadata(t.path().join("link")).is_ok());
    assert!(victim.exists());
    assert!(!t.path().join("f").exists());
}

#[test]
fn sizes_read_well() {
    assert_eq!(size(300), "300 bytes");
    assert_eq!(size(256 << 20), "256 MiB");
    assert_eq!(size(3 << 19), "1.5 MiB");
}

#[test]
fn components() {
    assert!(super::is_one_component(std::ffi::OsStr::new("acme")));
    for bad in ["", ".", "..", "a/b"] {
        assert!(!super::is_one_component(std::ffi::OsStr::new(bad)), "{bad}");
    }
}
