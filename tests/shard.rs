//! `--shard K/N` and `JOB_COMPLETION_INDEX` with `--shards N`: every
//! instance in exactly one shard, shown by the dry run.

use std::collections::BTreeSet;

use crate::util::{Fixture, run};

fn planned(
    fx: &Fixture,
    args: &[&str],
    env: &[(&str, &str)],
) -> (serde_json::Value, BTreeSet<String>) {
    let mut cmd = fx.run(&["--dry-run", "--format", "json"]);
    cmd.args(args).args(["--", "t", "{}"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let ran = run(&mut cmd, fx.tmp.path());
    ran.expect_code(0);
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout()).unwrap();
    let ids = doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    (doc, ids)
}

#[test]
fn shards_partition_the_instances() {
    let names: Vec<String> = (0..90).map(|i| format!("tenant{i:02}")).collect();
    let fx = Fixture::with(&names);
    let mut seen = BTreeSet::new();
    for k in 0..3 {
        let (doc, ids) = planned(&fx, &["--shard", &format!("{k}/3")], &[]);
        assert_eq!(doc["shard"], format!("{k}/3"));
        assert!(
            ids.len() > 15 && ids.len() < 45,
            "shard {k}: {} ids",
            ids.len()
        );
        assert!(seen.is_disjoint(&ids), "an instance is in two shards");
        seen.extend(ids);
    }
    assert_eq!(
        seen,
        names.into_iter().collect::<BTreeSet<_>>(),
        "every instance in some shard"
    );
}

#[test]
fn job_completion_index_selects_the_shard() {
    let names: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    let fx = Fixture::with(&names);
    let (_, explicit) = planned(&fx, &["--shard", "1/3"], &[]);
    let (doc, from_env) = planned(&fx, &["--shards", "3"], &[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(explicit, from_env);
    assert_eq!(doc["shard"], "1/3");
    let (_, from_vars) = planned(
        &fx,
        &[],
        &[("JOB_COMPLETION_INDEX", "1"), ("SCATTER_SHARDS", "3")],
    );
    assert_eq!(explicit, from_vars);
    // Without --shards, JOB_COMPLETION_INDEX alone does not shard.
    let (doc, all) = planned(&fx, &[], &[("JOB_COMPLETION_INDEX", "1")]);
    assert!(doc["shard"].is_null());
    assert_eq!(all.len(), 30);
}

#[test]
fn the_text_plan_names_the_shard() {
    let fx = Fixture::with(&["a", "b", "c"]);
    let ran = run(
        fx.run(&["--dry-run", "--shard", "0/2", "--", "t"]),
        fx.tmp.path(),
    );
    ran.expect_code(0).expect_stdout("# shard     0/2");
}

#[test]
fn bad_shards_are_usage_errors() {
    let fx = Fixture::with(&["a"]);
    for (args, env, needle) in [
        (vec!["--shard", "3/3"], vec![], "out of range"),
        (vec!["--shard", "1/0"], vec![], "at least 1"),
        (vec!["--shard", "2"], vec![], "K/N"),
        (vec!["--shards", "3"], vec![], "JOB_COMPLETION_INDEX"),
        (
            vec!["--shards", "3"],
            vec![("JOB_COMPLETION_INDEX", "5")],
            "out of range",
        ),
        (vec!["--shard", "0/2", "--shards", "3"], vec![], "disagrees"),
    ] {
        let mut cmd = fx.run(&args);
        cmd.args(["--", "true"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(&mut cmd, fx.tmp.path())
            .expect_code(2)
            .expect_stderr(needle);
    }
}

#[test]
fn only_ignores_the_shard() {
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let fx = Fixture::with(&names);
    let (_, shard0) = planned(&fx, &["--shard", "0/2"], &[]);
    let other = names.iter().find(|n| !shard0.contains(*n)).unwrap();
    let (doc, ids) = planned(&fx, &["--shard", "0/2", "--only", other], &[]);
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        std::slice::from_ref(other)
    );
    assert!(doc["shard"].is_null());
}
