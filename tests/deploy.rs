//! The deployment files are part of the product: the cron.d entry, the
//! systemd units in deploy/systemd and the Kubernetes CronJob in
//! deploy/kubernetes. These tests parse each of them, check the settings
//! that make it correct (and that the three agree where they should), and
//! give the real binary the very arguments each file gives scatter, as a
//! dry run.
//!
//! Slow checks live elsewhere: deploy/systemd/verify.sh (systemd-analyze
//! verify), deploy/kubernetes/validate.sh (the Kubernetes API schemas) and
//! tests/cron/real-cron.sh (three minutes under the real cron daemon).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_scatter");

/// scatter's default --kill-after.
const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn secs(s: &str) -> Duration {
    humantime::parse_duration(s).unwrap_or_else(|e| panic!("{s:?} is not a duration: {e}"))
}

// ---------------------------------------------------------------------------
// scatter's command line, as the deployment files give it

/// The arguments of `scatter run ... -- TASK...`, split at the first `--`.
struct RunArgs {
    opts: Vec<String>,
    task: Vec<String>,
}

impl RunArgs {
    /// `args` starts with `run` (the program name already removed).
    fn new(args: &[String], file: &str) -> RunArgs {
        assert_eq!(
            args.first().map(String::as_str),
            Some("run"),
            "{file}: scatter's first argument must be `run`: {args:?}"
        );
        let dash = args
            .iter()
            .position(|a| a == "--")
            .unwrap_or_else(|| panic!("{file}: the task must come after `--`: {args:?}"));
        let task = args[dash + 1..].to_vec();
        assert!(!task.is_empty(), "{file}: no task after `--`");
        assert!(
            task.iter().any(|a| a.contains("{}") || a.contains("{id}")),
            "{file}: the task never receives the instance id ({{}}): {task:?}"
        );
        RunArgs {
            opts: args[1..dash].to_vec(),
            task,
        }
    }

    /// The value of `--name VALUE` or `--name=VALUE`; the flag at most once.
    fn flag(&self, name: &str) -> Option<&str> {
        let mut found = None;
        let mut i = 0;
        while i < self.opts.len() {
            let a = &self.opts[i];
            let value = if a == name {
                i += 1;
                Some(
                    self.opts
                        .get(i)
                        .unwrap_or_else(|| panic!("{name} without a value"))
                        .as_str(),
                )
            } else {
                a.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))
            };
            if let Some(v) = value {
                assert!(found.is_none(), "{name} is given twice: {:?}", self.opts);
                found = Some(v);
            }
            i += 1;
        }
        found
    }

    fn has(&self, name: &str) -> bool {
        self.opts
            .iter()
            .any(|a| a == name || a.starts_with(&format!("{name}=")))
    }

    fn duration(&self, name: &str) -> Option<Duration> {
        self.flag(name).map(secs)
    }

    /// A copy with `name`'s value replaced.
    fn with(&self, name: &str, value: &str) -> RunArgs {
        let mut opts = self.opts.clone();
        let i = opts
            .iter()
            .position(|a| a == name)
            .unwrap_or_else(|| panic!("no {name} to replace"));
        opts[i + 1] = value.to_owned();
        RunArgs {
            opts,
            task: self.task.clone(),
        }
    }

    /// Runs the same arguments as `scatter run --dry-run --format json`,
    /// in an empty environment but for `env`, and returns the plan.
    fn dry_run(&self, env: &[(&str, &str)]) -> serde_json::Value {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        cmd.envs(env.iter().copied());
        cmd.arg("run")
            .args(&self.opts)
            .args(["--dry-run", "--format", "json", "--"])
            .args(&self.task);
        let out = cmd.output().expect("run scatter");
        assert!(
            out.status.success(),
            "dry run failed ({}): {cmd:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "plan is not JSON: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

fn plan_ids(plan: &serde_json::Value) -> Vec<String> {
    plan["instances"]
        .as_array()
        .expect("plan has instances")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

/// A throw-away instances tree.
fn instances(ids: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for id in ids {
        std::fs::create_dir(dir.path().join(id)).expect("mkdir");
    }
    dir
}

const DEMO_IDS: &[&str] = &["acme", "big co", "globex", "initech", "umbrella", "wayne"];

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn demo_ids() -> Vec<String> {
    sorted(DEMO_IDS.iter().map(|s| s.to_string()).collect())
}

// ---------------------------------------------------------------------------
// cron.d/scatter

struct CronEntry {
    env: BTreeMap<String, String>,
    /// The one active line, split into whitespace-separated fields.
    fields: Vec<String>,
}

fn cron_entry() -> CronEntry {
    let text = read("cron.d/scatter");
    let mut env = BTreeMap::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap();
        if let Some((name, value)) = first.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            assert_eq!(first, line, "cron.d/scatter: unexpected spaces in {line:?}");
            env.insert(name.to_owned(), value.to_owned());
            continue;
        }
        lines.push(line.to_owned());
    }
    assert_eq!(
        lines.len(),
        1,
        "cron.d/scatter must have exactly one active cron line, has {lines:?}"
    );
    let fields = lines[0].split_whitespace().map(str::to_owned).collect();
    CronEntry { env, fields }
}

#[test]
fn cron_entry_runs_scatter_every_minute_as_root() {
    let entry = cron_entry();
    let f = &entry.fields;
    assert!(f.len() > 8, "cron line too short: {f:?}");
    assert_eq!(
        f[..5],
        ["*", "*", "*", "*", "*"],
        "cron line must run every minute"
    );
    assert_eq!(
        f[5], "root",
        "cron.d lines name the user; the job runs as root"
    );
    assert_eq!(
        f[6..8],
        ["scatter", "run"],
        "the command must start with `scatter run`"
    );
    let path = entry
        .env
        .get("PATH")
        .expect("cron.d/scatter must set PATH= (cron's default lacks /usr/local/bin)");
    assert!(
        path.split(':').any(|d| d == "/usr/local/bin"),
        "PATH= must include /usr/local/bin, where `cargo install --root /usr/local` puts scatter: {path}"
    );
    assert_eq!(entry.env.get("SHELL").map(String::as_str), Some("/bin/sh"));

    // cron hands the command to /bin/sh; with no quoting or expansion in it,
    // splitting at whitespace gives exactly the argv sh would.
    let command = f[6..].join(" ");
    assert!(
        !command.contains(|c: char| "'\"\\$`;&|<>*?~%".contains(c)),
        "the cron command must need no shell quoting (and % is special to cron): {command}"
    );
    let run = RunArgs::new(&f[7..], "cron.d/scatter");
    assert!(run.flag("--instances").is_some(), "--instances is required");
    assert!(
        run.flag("--lock-dir").is_some(),
        "give an explicit, private --lock-dir"
    );
    assert_eq!(run.flag("--name"), Some("checkmail"));
    assert!(!run.has("--detach"));

    let tree = instances(DEMO_IDS);
    let locks = tempfile::tempdir().unwrap();
    let run = run
        .with("--instances", tree.path().to_str().unwrap())
        .with("--lock-dir", locks.path().to_str().unwrap());
    let plan = run.dry_run(&[]);
    assert_eq!(sorted(plan_ids(&plan)), demo_ids());
    assert_eq!(
        plan["window_secs"].as_f64(),
        Some(60.0),
        "cron starts a run every 60 s"
    );
}

// ---------------------------------------------------------------------------
// deploy/systemd

/// A unit file: (section, key, value) in file order. Comments and blank
/// lines are dropped; a line ending in `\` continues on the next one.
struct Unit {
    name: &'static str,
    entries: Vec<(String, String, String)>,
}

fn unit(name: &'static str) -> Unit {
    let text = read(&format!("deploy/systemd/{name}"));
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(s) = line.strip_prefix('[') {
            section = s
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("{name}: bad section {line:?}"))
                .to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: not key=value: {line:?}"));
        assert!(!section.is_empty(), "{name}: {key}= outside a section");
        entries.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    assert!(pending.is_empty(), "{name}: ends in a continuation line");
    Unit { name, entries }
}

impl Unit {
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The value of a setting given exactly once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key)[..] {
            [v] => v,
            ref vs => panic!(
                "{}: [{section}] {key}= must be set exactly once, found {vs:?}",
                self.name
            ),
        }
    }

    fn maybe(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }

    fn sections(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.entries.iter().map(|(s, _, _)| s.as_str()).collect();
        s.dedup();
        s
    }
}

fn is_yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "on" | "1")
}

#[test]
fn systemd_timer_fires_on_every_minute() {
    let t = unit("scatter-checkmail.timer");
    assert_eq!(t.one("Timer", "OnCalendar"), "minutely");
    assert_eq!(
        t.one("Timer", "AccuracySec"),
        "1s",
        "the default accuracy (1min) lets the timer fire anywhere in the minute"
    );
    if let Some(delay) = t.maybe("Timer", "RandomizedDelaySec") {
        assert_eq!(
            secs(delay),
            Duration::ZERO,
            "scatter does its own spreading"
        );
    }
    if let Some(p) = t.maybe("Timer", "Persistent") {
        assert!(
            !is_yes(p),
            "a catch-up run at boot is pointless for a minutely job"
        );
    }
    if let Some(u) = t.maybe("Timer", "Unit") {
        assert_eq!(u, "scatter-checkmail.service");
    }
    assert_eq!(t.one("Install", "WantedBy"), "timers.target");
}

/// The service's ExecStart, split into words, with its program.
fn exec_start(s: &Unit) -> (String, RunArgs) {
    let line = s.one("Service", "ExecStart");
    assert!(
        !line.contains(['"', '\'', ';']) && !line.starts_with(['-', '@', '+', '!', ':']),
        "keep ExecStart free of quoting and prefixes so that it reads (and splits) as plain words: {line}"
    );
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let program = words[0].clone();
    (program, RunArgs::new(&words[1..], s.name))
}

#[test]
fn systemd_service_settings() {
    let s = unit("scatter-checkmail.service");
    assert_eq!(s.one("Service", "Type"), "oneshot");
    assert!(
        !s.sections().contains(&"Install"),
        "the timer starts the service; it must not be enabled on its own"
    );
    let (program, run) = exec_start(&s);
    assert!(
        program.starts_with('/') && program.ends_with("/scatter"),
        "ExecStart must name scatter by its absolute path: {program}"
    );

    // Locks in the runtime directory, kept between runs.
    let runtime = s.one("Service", "RuntimeDirectory");
    assert!(
        !runtime.contains([' ', '/']),
        "one RuntimeDirectory= for the locks: {runtime}"
    );
    let lock_dir = run.flag("--lock-dir").expect("--lock-dir");
    assert!(
        [
            "${RUNTIME_DIRECTORY}".to_owned(),
            format!("%t/{runtime}"),
            format!("/run/{runtime}")
        ]
        .contains(&lock_dir.to_owned()),
        "--lock-dir must be the RuntimeDirectory= ({runtime}), found {lock_dir}"
    );
    assert!(
        is_yes(s.one("Service", "RuntimeDirectoryPreserve")),
        "without RuntimeDirectoryPreserve=yes systemd deletes the lock files after every run, under a manual run holding one"
    );
    if let Some(mode) = s.maybe("Service", "RuntimeDirectoryMode") {
        let mode = u32::from_str_radix(mode, 8).expect("octal mode");
        assert_eq!(
            mode & 0o022,
            0,
            "scatter refuses a lock directory that group or others can write"
        );
    }

    let state = s.one("Service", "StateDirectory");
    let state_dir = run.flag("--state-dir").expect("--state-dir");
    assert!(
        ["${STATE_DIRECTORY}".to_owned(), format!("/var/lib/{state}")]
            .contains(&state_dir.to_owned()),
        "--state-dir must be the StateDirectory= ({state}), found {state_dir}"
    );

    assert!(
        matches!(run.flag("--log"), Some("journald" | "auto")),
        "log to the journal"
    );
    assert!(
        !run.has("--detach"),
        "--detach under systemd: the tasks would be killed with the cgroup"
    );
    if run.has("--metrics-file") && s.maybe("Service", "ProtectSystem") == Some("strict") {
        assert!(
            s.maybe("Service", "ReadWritePaths").is_some(),
            "--metrics-file needs ReadWritePaths= under ProtectSystem=strict"
        );
    }

    // Time limits: a hung task must not hold the (non-overlapping) runs up
    // for long, and systemd's limits come after scatter's own.
    let window = run.duration("--window").unwrap_or(Duration::from_secs(60));
    let timeout = run
        .duration("--timeout")
        .expect("--timeout: under a timer a hung task delays every tenant's next run");
    let kill_after = run.duration("--kill-after").unwrap_or(DEFAULT_KILL_AFTER);
    assert!(
        timeout < window,
        "--timeout ({timeout:?}) should be shorter than the window ({window:?})"
    );
    assert!(
        window <= Duration::from_secs(60),
        "the window must fit the timer's minute"
    );
    let start_limit = secs(s.one("Service", "TimeoutStartSec"));
    assert!(
        start_limit > window + timeout + kill_after,
        "TimeoutStartSec= ({start_limit:?}) must exceed window + timeout + kill-after ({:?})",
        window + timeout + kill_after
    );
    assert_eq!(
        s.one("Service", "KillMode"),
        "mixed",
        "let scatter stop its own tasks"
    );
    let stop_limit = secs(s.one("Service", "TimeoutStopSec"));
    assert!(
        stop_limit > kill_after,
        "TimeoutStopSec= must leave scatter its --kill-after"
    );
    assert!(
        s.one("Service", "SuccessExitStatus")
            .split_whitespace()
            .any(|v| v == "143"),
        "a deliberate stop (143) is not a failure"
    );

    // Hardening that must not get in the way of the job.
    assert!(is_yes(s.one("Service", "NoNewPrivileges")));
    assert!(is_yes(s.one("Service", "PrivateTmp")));
    assert!(matches!(
        s.one("Service", "ProtectSystem"),
        "strict" | "full" | "yes"
    ));
    assert!(
        s.maybe("Service", "PrivateNetwork")
            .is_none_or(|v| !is_yes(v)),
        "the task talks to the web server"
    );
    if let Some(families) = s.maybe("Service", "RestrictAddressFamilies") {
        for needed in ["AF_UNIX", "AF_INET"] {
            assert!(
                families.split_whitespace().any(|f| f == needed),
                "RestrictAddressFamilies= lacks {needed}"
            );
        }
    }
}

#[test]
fn systemd_service_runs_the_cron_job() {
    let s = unit("scatter-checkmail.service");
    let (_, run) = exec_start(&s);
    let entry = cron_entry();
    let cron = RunArgs::new(&entry.fields[7..], "cron.d/scatter");
    assert_eq!(
        run.task, cron.task,
        "the timer and the cron entry run the same task"
    );
    assert_eq!(run.flag("--instances"), cron.flag("--instances"));
    assert_eq!(run.flag("--name"), cron.flag("--name"));

    // The same words, with systemd's variables filled in, as a dry run.
    let tree = instances(DEMO_IDS);
    let runtime = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let run = run
        .with("--instances", tree.path().to_str().unwrap())
        .with("--lock-dir", runtime.path().to_str().unwrap())
        .with("--state-dir", state.path().to_str().unwrap());
    let plan = run.dry_run(&[]);
    assert_eq!(sorted(plan_ids(&plan)), demo_ids());
    assert_eq!(plan["name"].as_str(), Some("checkmail"));
}

// ---------------------------------------------------------------------------
// deploy/kubernetes

fn cronjob() -> Yaml {
    let text = read("deploy/kubernetes/cronjob.yaml");
    assert!(
        !text.contains('\t'),
        "cronjob.yaml: tabs are not YAML indentation"
    );
    // yaml-rust2 rejects duplicate keys, so a field given twice fails here.
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("cronjob.yaml: {e}"));
    assert_eq!(docs.len(), 1, "cronjob.yaml must hold exactly one document");
    let doc = docs.remove(0);
    no_aliases(&doc, "");
    doc
}

fn no_aliases(y: &Yaml, at: &str) {
    match y {
        Yaml::Alias(_) | Yaml::BadValue => panic!("cronjob.yaml: unsupported node at {at}"),
        Yaml::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| no_aliases(v, &format!("{at}[{i}]"))),
        Yaml::Hash(h) => h.iter().for_each(|(k, v)| {
            let key = k
                .as_str()
                .unwrap_or_else(|| panic!("cronjob.yaml: a non-string key at {at}"));
            no_aliases(v, &format!("{at}.{key}"))
        }),
        _ => {}
    }
}

/// The node at a dotted path, which must exist.
fn at<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    let mut node = y;
    for key in path.split('.') {
        node = &node[key];
        assert!(!node.is_badvalue(), "cronjob.yaml: no {path}");
    }
    node
}

fn str_at<'a>(y: &'a Yaml, path: &str) -> &'a str {
    at(y, path)
        .as_str()
        .unwrap_or_else(|| panic!("cronjob.yaml: {path} must be a string"))
}

fn int_at(y: &Yaml, path: &str) -> i64 {
    at(y, path)
        .as_i64()
        .unwrap_or_else(|| panic!("cronjob.yaml: {path} must be an integer"))
}

fn strings(y: &Yaml, path: &str) -> Vec<String> {
    at(y, path)
        .as_vec()
        .unwrap_or_else(|| panic!("cronjob.yaml: {path} must be a list"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("cronjob.yaml: {path} must hold strings, has {v:?}"))
                .to_owned()
        })
        .collect()
}

/// The one container of the pod template.
fn container(doc: &Yaml) -> &Yaml {
    let containers = at(doc, "spec.jobTemplate.spec.template.spec.containers")
        .as_vec()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container: scatter");
    &containers[0]
}

fn env_var<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    let env = container["env"].as_vec()?;
    let mut found = env.iter().filter(|e| e["name"].as_str() == Some(name));
    let e = found.next()?;
    assert!(found.next().is_none(), "env {name} given twice");
    Some(
        e["value"]
            .as_str()
            .unwrap_or_else(|| panic!("env {name}: Kubernetes wants a string value (quote it)")),
    )
}

fn k8s_run(doc: &Yaml) -> RunArgs {
    let c = container(doc);
    assert_eq!(
        strings(c, "command"),
        ["scatter"],
        "the container runs scatter"
    );
    RunArgs::new(&strings(c, "args"), "cronjob.yaml")
}

/// completions, which must equal parallelism and SCATTER_SHARDS.
fn shards(doc: &Yaml) -> u32 {
    let job = "spec.jobTemplate.spec";
    let completions = int_at(doc, &format!("{job}.completions"));
    let parallelism = int_at(doc, &format!("{job}.parallelism"));
    assert_eq!(
        completions, parallelism,
        "every shard's pod must run at once: parallelism = completions"
    );
    let env =
        env_var(container(doc), "SCATTER_SHARDS").expect("SCATTER_SHARDS in the container's env");
    let env: i64 = env
        .parse()
        .unwrap_or_else(|_| panic!("SCATTER_SHARDS={env:?} is not a number"));
    assert_eq!(
        env, completions,
        "SCATTER_SHARDS must equal completions: one shard per index"
    );
    assert!(completions >= 1);
    u32::try_from(completions).unwrap()
}

#[test]
fn kubernetes_cronjob_fields() {
    let doc = cronjob();
    assert_eq!(str_at(&doc, "apiVersion"), "batch/v1");
    assert_eq!(str_at(&doc, "kind"), "CronJob");
    assert!(!str_at(&doc, "metadata.name").is_empty());
    assert_eq!(str_at(&doc, "spec.schedule"), "* * * * *");
    assert_eq!(
        str_at(&doc, "spec.concurrencyPolicy"),
        "Allow",
        "Forbid would skip a minute for every tenant behind one slow pod; Replace would kill running checks"
    );
    let starting = int_at(&doc, "spec.startingDeadlineSeconds");
    assert!(
        (1..60).contains(&starting),
        "startingDeadlineSeconds must be set and under a minute, is {starting}"
    );

    let job = "spec.jobTemplate.spec";
    assert_eq!(str_at(&doc, &format!("{job}.completionMode")), "Indexed");
    let n = shards(&doc);
    let backoff = int_at(&doc, &format!("{job}.backoffLimit"));
    if let Some(per_index) = doc["spec"]["jobTemplate"]["spec"]["backoffLimitPerIndex"].as_i64() {
        assert_eq!(
            per_index, 0,
            "a failed shard is not retried: the next minute runs it"
        );
        assert!(
            backoff >= i64::from(n),
            "backoffLimit below completions ends the whole Job when shards fail"
        );
    }
    assert!(int_at(&doc, &format!("{job}.ttlSecondsAfterFinished")) > 0);
    let pod = format!("{job}.template.spec");
    assert_eq!(
        str_at(&doc, &format!("{pod}.restartPolicy")),
        "Never",
        "a failed pod must not rerun its shard in the same minute"
    );

    let run = k8s_run(&doc);
    assert!(run.flag("--instances").is_some());
    assert!(
        !run.has("--shard"),
        "the index comes from JOB_COMPLETION_INDEX, not a fixed --shard"
    );
    assert!(
        env_var(container(&doc), "JOB_COMPLETION_INDEX").is_none(),
        "Kubernetes sets JOB_COMPLETION_INDEX itself"
    );
    assert_eq!(
        run.flag("--log"),
        Some("stderr"),
        "Kubernetes collects stderr"
    );
    assert!(
        !run.has("--detach"),
        "--detach: the container would exit and kill its tasks"
    );

    // Deadlines against scatter's own timing.
    let window = run.duration("--window").unwrap_or(Duration::from_secs(60));
    let timeout = run
        .duration("--timeout")
        .expect("--timeout bounds every check, and so the pod");
    let kill_after = run.duration("--kill-after").unwrap_or(DEFAULT_KILL_AFTER);
    assert!(window <= Duration::from_secs(60));
    assert!(
        timeout + kill_after < Duration::from_secs(60),
        "a tenant's check must end before its next check, about a minute later, in another pod"
    );
    let deadline = Duration::from_secs(
        int_at(&doc, &format!("{job}.activeDeadlineSeconds"))
            .try_into()
            .unwrap(),
    );
    assert!(
        deadline >= window + timeout + kill_after
            && deadline <= window + timeout + kill_after + Duration::from_secs(30),
        "activeDeadlineSeconds ({deadline:?}) should be a little over window + timeout + kill-after ({:?})",
        window + timeout + kill_after
    );
    let grace = int_at(&doc, &format!("{pod}.terminationGracePeriodSeconds"));
    assert!(
        Duration::from_secs(grace.try_into().unwrap()) > kill_after,
        "the grace period must leave scatter its --kill-after"
    );

    // Security context.
    assert_eq!(
        at(&doc, &format!("{pod}.securityContext.runAsNonRoot")).as_bool(),
        Some(true)
    );
    let c = container(&doc);
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(strings(c, "securityContext.capabilities.drop"), ["ALL"]);
    assert!(
        c["resources"]["limits"]["memory"].as_str().is_some(),
        "set a memory limit"
    );

    // Same checkmail task as the cron entry, against the web app's Service
    // instead of 127.0.0.1 (which would be the pod itself).
    let cron = RunArgs::new(&cron_entry().fields[7..], "cron.d/scatter");
    let (k8s_url, cron_url) = (run.task.last().unwrap(), cron.task.last().unwrap());
    assert_eq!(
        run.task[..run.task.len() - 1],
        cron.task[..cron.task.len() - 1],
        "the same wget flags as cron.d/scatter"
    );
    assert!(k8s_url.ends_with("/{}/checkmail.php") && cron_url.ends_with("/{}/checkmail.php"));
    assert!(
        !k8s_url.contains("127.0.0.1") && !k8s_url.contains("localhost"),
        "in a pod, 127.0.0.1 is the pod: {k8s_url}"
    );
}

#[test]
fn kubernetes_volumes_back_every_path() {
    let doc = cronjob();
    let pod = at(&doc, "spec.jobTemplate.spec.template.spec");
    let volumes: BTreeMap<String, &Yaml> = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name").to_owned(), v))
        .collect();
    let c = container(&doc);
    let mounts: Vec<(String, String, bool)> = c["volumeMounts"]
        .as_vec()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("mount name").to_owned();
            assert!(
                volumes.contains_key(&name),
                "volumeMount {name} has no volume"
            );
            (
                name,
                m["mountPath"].as_str().expect("mountPath").to_owned(),
                m["readOnly"].as_bool() == Some(true),
            )
        })
        .collect();
    for name in volumes.keys() {
        assert!(
            mounts.iter().any(|(n, _, _)| n == name),
            "volume {name} is never mounted"
        );
    }
    // The mount a path lives on (the longest mountPath that is a prefix).
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|(_, m, _)| path == m || path.starts_with(&format!("{m}/")))
            .max_by_key(|(_, m, _)| m.len())
            .unwrap_or_else(|| panic!("{path} is on no volume (the root file system is read-only)"))
    };

    let run = k8s_run(&doc);
    let (name, _, ro) = mount_of(run.flag("--instances").unwrap());
    assert!(*ro, "mount the instances read-only");
    assert_eq!(
        volumes[name]["persistentVolumeClaim"]["readOnly"].as_bool(),
        Some(true),
        "claim the instances read-only"
    );

    let lock_dir = run.flag("--lock-dir").expect("--lock-dir");
    let (name, mount_path, ro) = mount_of(lock_dir);
    assert!(!ro);
    assert_eq!(
        volumes[name]["emptyDir"]["medium"].as_str(),
        Some("Memory"),
        "locks belong on tmpfs, private to the pod"
    );
    assert_ne!(
        lock_dir, mount_path,
        "an emptyDir's mount point is world-writable, which scatter refuses: use a subdirectory"
    );

    let state_dir = run
        .flag("--state-dir")
        .expect("--state-dir on a writable volume, or scatter warns every run");
    let (name, _, ro) = mount_of(state_dir);
    assert!(!ro && !volumes[name]["emptyDir"].is_badvalue());
    // Pauses, back-off and --report changes need state that outlives the
    // pod; this one does not (README: "State that survives the pod").
    for flag in ["--backoff", "--report", "--on-change", "--remind"] {
        assert!(
            !run.has(flag)
                && env_var(
                    c,
                    &format!("SCATTER_{}", flag[2..].replace('-', "_").to_uppercase())
                )
                .is_none(),
            "{flag} needs a state directory that outlives the pod, and the state is on an emptyDir"
        );
    }
}

#[test]
fn kubernetes_shards_run_every_instance_exactly_once() {
    let doc = cronjob();
    let n = shards(&doc);
    let run = k8s_run(&doc);
    let ids: Vec<String> = (0..40).map(|i| format!("tenant {i:02}")).collect();
    let tree = instances(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    let run = run.with("--instances", tree.path().to_str().unwrap());
    let shards = n.to_string();

    let mut seen = Vec::new();
    for k in 0..n {
        let index = k.to_string();
        let plan = run.dry_run(&[
            ("JOB_COMPLETION_INDEX", &index),
            ("SCATTER_SHARDS", &shards),
        ]);
        let mine = plan_ids(&plan);
        assert!(!mine.is_empty() || n > 40, "shard {k} of {n} runs nothing");
        seen.extend(mine);
    }
    assert_eq!(
        sorted(seen),
        ids,
        "the {n} pods together must run every instance exactly once"
    );

    // The index Kubernetes could set beyond the shards is refused, not
    // silently run as some other shard.
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("JOB_COMPLETION_INDEX", n.to_string())
        .env("SCATTER_SHARDS", &shards)
        .arg("run")
        .args(&run.opts)
        .args(["--dry-run", "--"])
        .args(&run.task);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "index {n} of {n} shards must be a usage error: {cmd:?}"
    );
}
