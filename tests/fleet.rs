//! Fleet mode with several real processes on loopback: the Kubernetes API
//! stand-in, a real Prometheus scraping each replica every second, and
//! three `switchyard serve --fleet kubernetes` replicas. Sticky users agree
//! across replicas, a status write reaches every replica within a second,
//! a good canary promotes and a bad one aborts on the fleet's metrics, and
//! `scripts/fleet-local.sh` starts and stops such a fleet. The scenarios
//! run one at a time (they share two cores).

mod common;
#[allow(dead_code)]
#[path = "fleet/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "fleet/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "kube_standin/harness.rs"]
mod standin;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{json, Value};

use common::digits_samples;
use harness::{infer, LocalFleet, TOKEN};
use load::Load;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits until the rollout is progressing at `step` and every replica holds
/// its policy revision; returns the rollout.
async fn wait_step(fleet: &LocalFleet, step: u64) -> Value {
    let r = fleet
        .wait_rollout(0, Duration::from_secs(60), &format!("step {step}"), |r| {
            r["phase"] == "progressing" && r["step"] == step
        })
        .await;
    wait_revision(fleet, r["revision"].as_u64().unwrap()).await;
    r
}

/// Waits until every replica reports policy `revision` of digits.
async fn wait_revision(fleet: &LocalFleet, revision: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..fleet.pods.len() {
        while fleet.fleet(i).await["revisions"]["digits"] != revision {
            assert!(
                Instant::now() < deadline,
                "{} does not hold revision {revision}\n{}",
                fleet.pods[i].name,
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The version each of `users` users gets from each replica: the
/// `x-model-version` of a real predict per user and replica. curl sends
/// them (`--parallel`, `%header{...}`): the servers, not the client, should
/// be what two shared cores spend their time on.
async fn versions(fleet: &LocalFleet, users: usize) -> BTreeMap<usize, Vec<u64>> {
    let row = digits_samples()[0].0.clone();
    let body = fleet.dir().join("predict.json");
    std::fs::write(&body, common::digits_request(&[row]).to_string()).unwrap();
    let mut config = String::new();
    for u in 0..users {
        for (p, pod) in fleet.pods.iter().enumerate() {
            config.push_str(&format!(
                "next\nurl = \"{}/v2/models/digits/infer\"\nheader = \"x-user-id: user-{u}\"\n\
                 header = \"content-type: application/json\"\ndata = \"@{}\"\noutput = \"/dev/null\"\n\
                 write-out = \"{u} {p} %{{http_code}} %header{{x-model-version}} %header{{x-route}}\\n\"\n",
                pod.data,
                body.display()
            ));
        }
    }
    let config_path = fleet.dir().join(format!("curl-{users}.cfg"));
    std::fs::write(&config_path, config).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-s", "--parallel", "--parallel-max", "24", "-K"])
            .arg(&config_path)
            .output()
            .expect("curl (7.84 or later) is needed: run `make setup-test`")
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let n = fleet.pods.len();
    let mut by_user: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 5, "curl wrote {line:?} (curl 7.84 or later is needed)");
        let (u, p): (usize, usize) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert_eq!(f[2], "200", "user-{u} on replica {p}");
        assert!(["sticky", "stable"].contains(&f[4]), "user-{u}: route {}", f[4]);
        by_user.entry(u).or_insert_with(|| vec![0; n])[p] = f[3].parse().unwrap();
    }
    assert_eq!(by_user.len(), users, "curl answered for {} users", by_user.len());
    assert!(
        by_user.values().all(|vs| vs.iter().all(|&v| v > 0)),
        "a request is missing"
    );
    by_user
}

/// Checks that every user got one version from all replicas; returns the
/// users on the candidate (version 2).
fn agreed_on_candidate(by_user: &BTreeMap<usize, Vec<u64>>, weight_pct: f64) -> Vec<usize> {
    let mut on_candidate = Vec::new();
    for (u, vs) in by_user {
        assert!(
            vs.iter().all(|v| *v == vs[0]),
            "user-{u} got {vs:?} from the 3 replicas"
        );
        if vs[0] == 2 {
            on_candidate.push(*u);
        }
    }
    let share = on_candidate.len() as f64 / by_user.len() as f64 * 100.0;
    assert!(
        (share - weight_pct).abs() < 1.5,
        "{share:.2}% of users on the candidate at {weight_pct}%"
    );
    on_candidate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_agree_across_replicas_and_status_writes_converge_within_a_second() {
    let _serial = SERIAL.lock().await;
    let fleet = LocalFleet::start(3, harness::repo(&[])).await;
    let hold = json!({"interval": "1s", "min_requests": 1_000_000, "progress_deadline": "1h"});
    fleet
        .start_rollout(
            1,
            json!({"strategy": "canary", "candidate": 2, "analysis": hold,
                   "steps": [{"weight": "10%", "bake": "1h"}, {"weight": "50%", "bake": "1h"}, {"weight": "100%"}]}),
        )
        .await;
    wait_step(&fleet, 0).await;
    // (a) 10,000 users on each replica: one version per user, 10 % of them on 2
    let t = Instant::now();
    let at_10 = agreed_on_candidate(&versions(&fleet, 10_000).await, 10.0);
    eprintln!("10,000 users x 3 replicas in {:?}", t.elapsed());
    let fleet_ref = &fleet;
    let salts: Vec<Value> = futures::future::join_all((0..3).map(|i| async move {
        let (_, p) = fleet_ref
            .admin(i, Method::GET, "/admin/v1/models/digits/policy", None)
            .await;
        p["policy"]["salt"].clone()
    }))
    .await;
    assert!(salts.iter().all(|s| *s == salts[0]), "{salts:?}");
    assert!(
        salts[0].as_str().unwrap().starts_with("digits-1-"),
        "the salt is the fleet's: {}",
        salts[0]
    );
    let (st, r) = fleet
        .admin(2, Method::POST, "/admin/v1/models/digits/rollout/promote", None)
        .await;
    assert_eq!((st, &r["weight"]), (200, &json!("50%")), "{r}");
    wait_step(&fleet, 1).await;
    let at_50 = agreed_on_candidate(&versions(&fleet, 10_000).await, 50.0);
    let at_50: std::collections::BTreeSet<usize> = at_50.into_iter().collect();
    assert!(
        at_10.iter().all(|u| at_50.contains(u)),
        "raising the weight only moves users to the candidate"
    );

    // (b) from each status write to every replica's switchyard_policy_revision
    let (st, _) = fleet
        .admin(
            0,
            Method::POST,
            "/admin/v1/models/digits/rollout/promote-full",
            None,
        )
        .await;
    assert_eq!(st, 200);
    let steps: Vec<Value> = (1..=9).map(|w| json!({"weight": w * 10, "bake": "1h"})).collect();
    fleet
        .start_rollout(
            0,
            json!({"strategy": "canary", "candidate": 1, "analysis": hold, "steps": steps}),
        )
        .await;
    wait_step(&fleet, 0).await;
    let mut samples = Vec::new();
    for step in 1..=8u64 {
        samples.push(convergence_of_one_promote(&fleet, step).await);
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    eprintln!(
        "fleet convergence, status write to all 3 replicas' switchyard_policy_revision: \
         median {:.0} ms, max {:.0} ms over {} writes",
        median * 1000.0,
        max * 1000.0,
        samples.len()
    );
    assert!(max < 1.0, "a status write took {max:.3} s to reach every replica");
}

/// Promotes to `step`; returns the seconds from the leader's status write
/// (its decision's time in the status history) to the last replica holding
/// the new revision. Replicas are polled on `/admin/v1/fleet`, whose
/// `revisions` come from the same snapshot field as the
/// `switchyard_policy_revision` gauge but cost a fraction of a full
/// `/metrics` render (which would dominate the figure); the gauge is
/// checked afterwards.
async fn convergence_of_one_promote(fleet: &LocalFleet, step: u64) -> f64 {
    let before = fleet.rollout(0).await["revision"].as_u64().unwrap();
    let pollers: Vec<_> = (0..fleet.pods.len())
        .map(|i| async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let held = fleet.fleet(i).await["revisions"]["digits"].as_u64();
                if held.is_some_and(|r| r > before) {
                    return now_secs();
                }
                assert!(
                    Instant::now() < deadline,
                    "revision {} never reached replica {i}",
                    before + 1
                );
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
        .collect();
    let promote = async {
        let (st, r) = fleet
            .admin(1, Method::POST, "/admin/v1/models/digits/rollout/promote", None)
            .await;
        assert_eq!((st, &r["step"]), (200, &json!(step)), "{r}");
    };
    let (seen, ()) = futures::join!(futures::future::join_all(pollers), promote);
    let last_seen = seen.into_iter().fold(0.0, f64::max);
    for i in 0..fleet.pods.len() {
        assert_eq!(
            fleet.revision(i).await,
            Some(before + 1),
            "{}'s gauge",
            fleet.pods[i].name
        );
    }
    // the leader stamps the decision just before its compare-and-swap write
    let (_, o) = standin::http(
        &fleet.kube,
        Method::GET,
        "/apis/switchyard.dev/v1alpha1/namespaces/default/modelrollouts/digits",
        None,
    )
    .await;
    let entry = o["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|h| {
            h["decision"]
                .as_str()
                .unwrap()
                .contains(&format!("step {} of", step + 1))
        })
        .unwrap_or_else(|| panic!("no history entry for step {step}: {o}"))
        .clone();
    let written: SystemTime = humantime::parse_rfc3339_weak(entry["at"].as_str().unwrap()).unwrap();
    let written = written.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    last_seen - written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_promotes_and_a_bad_one_aborts_on_the_fleets_metrics() {
    let _serial = SERIAL.lock().await;
    let fleet = LocalFleet::start(3, harness::repo(&[("tests/fixtures/models/digits_bad/1", 3)])).await;
    let load = Load::start(&fleet, &[0, 1, 2], 4, true);
    // latency is not what this test is about: two cores, three servers
    let analysis = json!({"interval": "1s", "min_requests": 20, "max_p95_ratio": 50.0,
                          "failure_limit": 2, "progress_deadline": "60s"});
    fleet
        .start_rollout(
            1,
            json!({"strategy": "canary", "candidate": 2, "analysis": analysis,
                   "steps": [{"weight": "20%", "bake": "3s"}, {"weight": "50%", "bake": "3s"}, {"weight": "100%"}]}),
        )
        .await;
    let r = fleet
        .wait_rollout(0, Duration::from_secs(120), "the good canary's end", |r| {
            ["promoted", "aborted"].contains(&r["phase"].as_str().unwrap_or(""))
        })
        .await;
    assert_eq!(r["phase"], "promoted", "{r}");
    wait_revision(&fleet, r["revision"].as_u64().unwrap()).await;

    // version 3 answers wrongly: the feedback posted to all replicas fails it
    fleet
        .start_rollout(
            2,
            json!({"strategy": "canary", "candidate": 3, "analysis": analysis,
                   "steps": [{"weight": "50%", "bake": "60s"}, {"weight": "100%"}]}),
        )
        .await;
    let r = fleet
        .wait_rollout(0, Duration::from_secs(120), "the bad canary's end", |r| {
            ["promoted", "aborted"].contains(&r["phase"].as_str().unwrap_or(""))
        })
        .await;
    assert_eq!(r["phase"], "aborted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("feedback"), "{r}");
    wait_revision(&fleet, r["revision"].as_u64().unwrap()).await;
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    // every replica sends everyone to stable 2 again
    let row = digits_samples()[0].0.clone();
    for p in &fleet.pods {
        for u in 0..20 {
            let (st, v, _, _) = infer(&fleet.client, &p.data, &format!("user-{u}"), &row, "").await;
            assert_eq!((st, v), (200, Some(2)), "{} user-{u}", p.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_local_script_starts_and_stops_a_fleet() {
    let _serial = SERIAL.lock().await;
    standin::ensure_built();
    let dir = tempfile::tempdir().unwrap();
    let script = common::root().join("scripts/fleet-local.sh");
    let run = |arg: &[&str]| {
        std::process::Command::new(&script)
            .args(arg)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("FLEET_DIR", dir.path())
            .env("SWITCHYARD_BIN", harness::BIN)
            .env("KUBE_STANDIN_BIN", standin::standin_exe())
            .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let out = run(&["start", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "start failed:\n{stderr}");
    let line = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["token"], TOKEN);
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{}/version", v["kube"].as_str().unwrap()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{}/-/ready", v["prometheus"].as_str().unwrap()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let pods = v["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for p in pods {
            assert_eq!(
                client
                    .get(format!("{}/ready", p["data"].as_str().unwrap()))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
            let f: Value = client
                .get(format!("{}/admin/v1/fleet", p["admin"].as_str().unwrap()))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!((&f["mode"], &f["pod"]), (&json!("kubernetes"), &p["name"]));
            leaders.push(f["leader"].clone());
        }
        if !leaders[0].is_null() && leaders.iter().all(|l| *l == leaders[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = run(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for p in pods {
        let pid = p["pid"].as_u64().unwrap();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{} (pid {pid}) still runs",
            p["name"]
        );
    }
    assert!(!dir.path().join("pids").exists());
}
