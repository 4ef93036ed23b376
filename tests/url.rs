//! `--url`: each instance's task is one HTTP request made by scatter, here
//! against a loopback server the test starts on a free port.

mod server;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use crate::util::{self, Fixture, run};
use server::{Answer, Server};

/// The server's answer for an id that names a status (`s404`), 200
/// otherwise, with a body naming the request.
fn by_name(req: &server::Request) -> Answer {
    let id = String::from_utf8_lossy(&req.segment(0)).to_string();
    let status = id
        .strip_prefix('s')
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    Answer::Status(status, format!("body of {id}\nline two\n").into_bytes())
}

fn json(ran: &util::Ran) -> serde_json::Value {
    serde_json::from_str(&ran.stdout()).unwrap_or_else(|e| panic!("{e}: {}", ran.stdout()))
}

fn by_id<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {doc}"))
}

#[test]
fn statuses_below_400_are_ok_and_the_others_fail_with_their_status() {
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["s200", "s302", "s404", "s500"]);
    let metrics = fx.tmp.path().join("m.prom");
    let url = srv.url("/{}/check.php");
    let ran = run(
        fx.run(&[
            "--window",
            "200ms",
            "--format",
            "json",
            "--url",
            &url,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(1);
    let doc = json(&ran);
    for (id, outcome, status) in [
        ("s200", "ok", None),
        ("s302", "ok", None),
        ("s404", "failed", Some(404)),
        ("s500", "failed", Some(500)),
    ] {
        let inst = by_id(&doc, id);
        assert_eq!(inst["outcome"], outcome, "{id}: {inst}");
        assert_eq!(inst["http_status"].as_u64(), status, "{id}: {inst}");
    }
    // The redirect was not followed.
    let asked: Vec<String> = srv.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(!asked.iter().any(|t| t.contains("elsewhere")), "{asked:?}");
    // The records and the metrics keep the status.
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fx.state().join("instances.json")).unwrap()).unwrap();
    assert_eq!(records["instances"]["s404"]["http_status"], 404);
    assert_eq!(records["instances"]["s404"]["outcome"], "failed");
    assert!(records["instances"]["s200"].get("http_status").is_none());
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains(
            "scatter_instance_last_http_status{scatter_name=\"instances\",instance_id=\"s500\"} 500\n"
        ),
        "{prom}"
    );
    let status = run(fx.status(&[]), fx.tmp.path());
    status
        .expect_code(1)
        .expect_stdout("s404")
        .expect_stdout("HTTP status 404");
}

#[test]
fn the_text_report_names_the_status_and_on_failure_shows_the_body() {
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["s200", "s503"]);
    let url = srv.url("/{}/check.php");
    let ran = run(
        fx.run(&["--window", "100ms", "--output", "on-failure", "--url", &url]),
        fx.tmp.path(),
    );
    ran.expect_code(1)
        .expect_stderr("scatter: s503: HTTP status 503 after")
        .expect_stderr("1 of 2 instances failed (1 ok, 1 failed)")
        .expect_stdout("s503: body of s503\ns503: line two\n");
    assert!(!ran.stdout().contains("s200"), "{}", ran.stdout());
}

#[test]
fn a_server_that_never_answers_costs_the_timeout_and_nothing_more() {
    let srv = Server::start(|_| Answer::Hang);
    let fx = Fixture::with(&["a"]);
    let url = srv.url("/{}");
    let began = Instant::now();
    let ran = run(
        fx.run(&["--only", "a", "--timeout", "1s", "--url", &url]),
        fx.tmp.path(),
    );
    let took = began.elapsed();
    ran.expect_code(124).expect_stderr("a: timed out after");
    // No grace period after the timeout: --kill-after does not apply.
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        !util::is_locked(&fx.lock_file("a")),
        "the lock was released"
    );
}

#[test]
fn a_refused_connection_fails_with_its_reason() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fx = Fixture::with(&["a", "b"]);
    let url = format!("http://127.0.0.1:{port}/{{}}");
    let ran = run(
        fx.run(&["--window", "100ms", "--format", "json", "--url", &url]),
        fx.tmp.path(),
    );
    ran.expect_code(1);
    let doc = json(&ran);
    let a = by_id(&doc, "a");
    assert_eq!(a["outcome"], "failed");
    let reason = a["reason"].as_str().unwrap();
    assert!(reason.contains("refused"), "{reason}");
    assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    let only = run(fx.run(&["--only", "b", "--url", &url]), fx.tmp.path());
    only.expect_code(1)
        .expect_stderr("b: request failed after")
        .expect_stderr("Connection refused");
}

#[test]
fn connections_are_kept_alive_and_reused() {
    let srv = Server::start(by_name);
    let ids: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    let fx = Fixture::with(&ids);
    let url = srv.url("/{}/check.php");
    let ran = run(fx.run(&["--window", "600ms", "--url", &url]), fx.tmp.path());
    ran.expect_code(0).expect_silent();
    assert_eq!(srv.requests().len(), 30);
    // One at a time, 20 ms apart: one connection carries them all (a few
    // more only if the machine stalls a request past the next start).
    assert!(srv.connections() <= 10, "{} connections", srv.connections());
}

#[test]
fn scatter_sleeps_between_requests() {
    // A flag that nothing clears kept every poll from sleeping once: the
    // requests were right and on time, and scatter burned a core.
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["a", "b", "c", "d"]);
    let url = srv.url("/{}");
    let ran = run(
        fx.run(&["--window", "2s", "--format", "json", "--url", &url]),
        fx.tmp.path(),
    );
    ran.expect_code(0);
    let own = util::own_cpu(&json(&ran));
    // Sleeping, it needs a few milliseconds; spinning, most of the 2 s.
    ran.check(
        own < 0.4,
        &format!("scatter's own CPU {own:.3} s over a 2 s window"),
    );
}

#[test]
fn hostile_ids_arrive_percent_encoded_and_decode_to_the_exact_bytes() {
    let srv = Server::start(by_name);
    let names: Vec<&[u8]> = vec![
        b"a b",
        b"q?x",
        b"h#x",
        b"p%41",
        b"o'reilly",
        b"new\nline",
        b"\xff\xfe",
        b"{}",
        b"cr\rlf\n",
    ];
    let fx = Fixture::new();
    for n in &names {
        fx.instance(OsStr::from_bytes(n));
    }
    let url = srv.url("/{}/check.php?tenant={id}&x=1");
    let ran = run(
        fx.run(&[
            "--window",
            "300ms",
            "--url",
            &url,
            "--header",
            "X-Tenant: {}",
            "--data",
            "id={}&more=1",
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(0).expect_silent();
    let got = srv.requests();
    assert_eq!(got.len(), names.len());
    for req in &got {
        assert_eq!(req.method, "POST");
        // Nothing but URI characters on the request line.
        assert!(
            req.target.bytes().all(|b| b.is_ascii_graphic()),
            "{}",
            req.target
        );
        let id = req.segment(0);
        assert!(names.contains(&id.as_slice()), "{id:?}");
        assert_eq!(req.segment(1), b"check.php");
        assert_eq!(req.query("tenant"), Some(id.clone()));
        assert_eq!(req.query("x"), Some(b"1".to_vec()), "one query value");
        let header = req.header("x-tenant").unwrap();
        assert!(!header.contains(&b'\n') && !header.contains(&b'\r'));
        assert_eq!(server::decode(std::str::from_utf8(header).unwrap()), id);
        let body = std::str::from_utf8(&req.body).unwrap();
        let value = body
            .strip_prefix("id=")
            .unwrap()
            .strip_suffix("&more=1")
            .unwrap();
        assert_eq!(server::decode(value), id);
        assert!(!value.contains('+'), "%20, not +: {value}");
        assert!(req.header("evil").is_none());
    }
}

#[test]
fn a_placeholder_in_the_host_is_refused_before_anything_runs() {
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["a"]);
    for url in [
        "http://{}/check.php".to_string(),
        format!("http://{}.{}/x", "{}", srv.addr),
        "http://127.0.0.1:{}/x".to_string(),
        format!("http://{{id}}@{}/x", srv.addr),
        format!("http://{}/x#{{}}", srv.addr),
        format!("http://{}/{{path}}", srv.addr),
    ] {
        let ran = run(fx.run(&["--url", &url]), fx.tmp.path());
        ran.expect_code(2).expect_stderr("hint:");
    }
    assert!(!fx.locks.exists(), "no lock directory was made");
    assert!(!fx.state().exists(), "no run was recorded");
    assert_eq!(srv.connections(), 0);
}

#[test]
fn options_that_make_no_sense_with_url_are_refused() {
    let fx = Fixture::with(&["a"]);
    let ran = run(
        fx.run(&["--detach", "--url", "http://127.0.0.1:9/{}"]),
        fx.tmp.path(),
    );
    ran.expect_code(2)
        .expect_stderr("--detach cannot be combined with --url");
    let ran = run(
        fx.run(&["--url", "http://127.0.0.1:9/{}", "--", "true"]),
        fx.tmp.path(),
    );
    ran.expect_code(2);
    let ran = run(fx.run(&["--method", "HEAD", "--", "true"]), fx.tmp.path());
    ran.expect_code(2).expect_stderr("--url");
    let ran = run(
        fx.run(&[
            "--url",
            "http://127.0.0.1:9/{}",
            "--method",
            "HEAD",
            "--data",
            "x",
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(2).expect_stderr("--data");
    assert!(!fx.locks.exists());
}

#[test]
fn only_exits_0_on_success_and_75_when_a_lock_is_held() {
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["a", "s404"]);
    let url = srv.url("/{}");
    run(fx.run(&["--only", "a", "--url", &url]), fx.tmp.path())
        .expect_code(0)
        .expect_silent();
    run(fx.run(&["--only", "s404", "--url", &url]), fx.tmp.path())
        .expect_code(1)
        .expect_stderr("s404: HTTP status 404");
    std::fs::create_dir_all(fx.locks.join("instances")).unwrap();
    let held = std::fs::File::create(fx.lock_file("a")).unwrap();
    held.try_lock().unwrap();
    let before = srv.requests().len();
    run(fx.run(&["--only", "a", "--url", &url]), fx.tmp.path())
        .expect_code(75)
        .expect_stderr("a: skipped: locked by");
    // A cron run skips it quietly.
    run(fx.run(&["--window", "100ms", "--url", &url]), fx.tmp.path());
    assert_eq!(srv.requests().len(), before + 1, "only s404 was asked");
    drop(held);
}

#[test]
fn the_lock_is_held_by_scatter_for_the_request_and_named_as_a_request() {
    let srv = Server::start(|req| {
        if req.segment(0) == b"slow" {
            std::thread::sleep(Duration::from_secs(3));
        }
        Answer::Status(200, Vec::new())
    });
    let fx = Fixture::with(&["slow"]);
    let url = srv.url("/{}");
    let mut child = util::spawn(&mut fx.run(&["--only", "slow", "--url", &url]));
    let lock = fx.lock_file("slow");
    assert!(util::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("task=request"))
    }));
    let record = std::fs::read_to_string(&lock).unwrap();
    let pid = format!("pid={} ", child.id());
    assert!(record.contains(&pid), "scatter itself holds it: {record}");
    assert!(util::is_locked(&lock), "held while the request runs");
    // A second run is skipped, and says a request holds it.
    let ran = run(
        fx.run(&["--only", "slow", "-v", "--url", &url]),
        fx.tmp.path(),
    );
    ran.expect_code(75)
        .expect_stderr("a request of scatter pid");
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(!util::is_locked(&lock), "released with the response");
}

#[test]
fn the_body_goes_to_the_log_file_under_dir() {
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["a", "s500"]);
    let logs = fx.tmp.path().join("logs");
    let mode = format!("dir={}", logs.display());
    let url = srv.url("/{}");
    let ran = run(
        fx.run(&["--window", "100ms", "--output", &mode, "--url", &url]),
        fx.tmp.path(),
    );
    ran.expect_code(1);
    assert_eq!(
        std::fs::read_to_string(logs.join("a.log")).unwrap(),
        "body of a\nline two\n"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("s500.log")).unwrap(),
        "body of s500\nline two\n"
    );
    assert!(!ran.stdout().contains("body of"), "{}", ran.stdout());
}

#[test]
fn the_dry_run_shows_each_url_and_method() {
    let fx = Fixture::with(&["acme", "big co"]);
    let url = "http://127.0.0.1:8080/{}/check.php";
    let ran = run(
        fx.run(&["--dry-run", "--method", "HEAD", "--url", url]),
        fx.tmp.path(),
    );
    ran.expect_code(0)
        .expect_stdout("  HEAD http://127.0.0.1:8080/acme/check.php\n")
        .expect_stdout("  HEAD http://127.0.0.1:8080/big%20co/check.php\n");
    let ran = run(
        fx.run(&["--dry-run", "--format", "json", "--url", url]),
        fx.tmp.path(),
    );
    let doc = json(ran.expect_code(0));
    let inst = by_id(&doc, "big co");
    assert_eq!(inst["method"], "GET");
    assert_eq!(inst["url"], "http://127.0.0.1:8080/big%20co/check.php");
    assert!(inst.get("argv").is_none());
    assert!(!fx.locks.exists());
}

#[test]
fn https_with_a_self_signed_certificate_through_cacert() {
    use std::sync::Arc;
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_der = key.cert.der().clone();
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key_der)
            .unwrap(),
    );
    let srv = Server::start_wrapped(by_name, move |sock| {
        let conn = rustls::ServerConnection::new(config.clone()).ok()?;
        Some(Box::new(rustls::StreamOwned::new(conn, sock)))
    });
    let fx = Fixture::with(&["a", "b c", "d", "e", "f", "g"]);
    let ca = fx.tmp.path().join("ca.pem");
    std::fs::write(&ca, key.cert.pem()).unwrap();
    let url = format!("https://{}/{{}}/check.php", srv.addr);
    let ran = run(
        fx.run(&[
            "--window",
            "600ms",
            "--url",
            &url,
            "--cacert",
            ca.to_str().unwrap(),
        ]),
        fx.tmp.path(),
    );
    ran.expect_code(0).expect_silent();
    let mut got: Vec<Vec<u8>> = srv.requests().iter().map(|r| r.segment(0)).collect();
    got.sort();
    let want: Vec<Vec<u8>> = ["a", "b c", "d", "e", "f", "g"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    assert_eq!(got, want);
    assert!(srv.connections() < 6, "kept alive over TLS too");
    // Without it, the certificate is not trusted.
    let ran = run(
        fx.run(&["--only", "a", "--format", "json", "--url", &url]),
        fx.tmp.path(),
    );
    ran.expect_code(1);
    let reason = by_id(&json(&ran), "a")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("TLS") && reason.contains("certificate"),
        "{reason}"
    );
    // A --cacert that is not a certificate file stops the run first.
    let ran = run(
        fx.run(&["--url", &url, "--cacert", fx.recorder.to_str().unwrap()]),
        fx.tmp.path(),
    );
    ran.expect_code(2).expect_stderr("--cacert");
}

#[test]
fn a_connection_the_server_closed_while_idle_is_not_reused() {
    let srv = Server::start(|_| Answer::StatusThenClose(200));
    let ids: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let fx = Fixture::with(&ids);
    let url = srv.url("/{}");
    let ran = run(fx.run(&["--window", "400ms", "--url", &url]), fx.tmp.path());
    ran.expect_code(0).expect_silent();
    assert_eq!(srv.requests().len(), 8);
    assert_eq!(srv.connections(), 8, "one new connection per request");
}

#[test]
fn a_host_name_is_resolved_before_the_run() {
    let srv = Server::start(by_name);
    let fx = Fixture::with(&["a", "b"]);
    let url = format!("http://localhost:{}/{{}}", srv.addr.port());
    let ran = run(fx.run(&["--window", "100ms", "--url", &url]), fx.tmp.path());
    ran.expect_code(0).expect_silent();
    assert_eq!(srv.requests().len(), 2);
    assert_eq!(
        srv.requests()[0].header("host"),
        Some(format!("localhost:{}", srv.addr.port()).as_bytes())
    );
}

#[test]
fn sigterm_ends_the_requests_in_flight_and_scatter_at_once() {
    let srv = Server::start(|_| Answer::Hang);
    let fx = Fixture::with(&["a", "b", "c"]);
    let url = srv.url("/{}");
    let child = util::spawn(&mut fx.run(&[
        "--window",
        "200ms",
        "--timeout",
        "60s",
        "--format",
        "json",
        "--url",
        &url,
    ]));
    assert!(util::wait_until(Duration::from_secs(10), || srv
        .requests()
        .len()
        == 3));
    let began = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(out.status.code(), Some(143));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["counts"]["killed"], 3, "{doc}");
    for id in ["a", "b", "c"] {
        assert!(!util::is_locked(&fx.lock_file(id)), "{id} released");
    }
}
