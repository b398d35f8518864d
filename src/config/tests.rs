//! The `serve` flags: parsing, validation, the settings handed down.

use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
    assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
    assert!(parse_size("lots").is_err());
    assert!(parse_size("3 parsecs").is_err());
}

#[test]
fn defaults() {
    let c = Config::defaults();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:8081");
    assert_eq!(c.grpc_listen.to_string(), "0.0.0.0:8001");
    assert!(!c.repository_api);
    assert_eq!(c.model_repository, PathBuf::from("models"));
    assert_eq!(c.body_limit, 8 << 20);
    assert_eq!(c.rollback_window, std::time::Duration::from_secs(600));
    assert_eq!(c.max_in_flight, 1024);
    assert_eq!(c.rate_limit, None);
    assert_eq!(c.fleet, FleetMode::Local);
    assert_eq!(c.lease_duration, std::time::Duration::from_secs(15));
    assert!(c.fleet_settings().is_none());
    let c = ServeFlags::parse_from(["serve", "--rate-limit", "100/60s", "--rate-limit-burst", "10"]).config;
    let r = c.rate_limit.unwrap();
    assert_eq!(
        (r.count, r.period.as_secs(), c.rate_limit_burst),
        (100, 60, Some(10))
    );
    assert!(c.validate().is_ok());
}

#[test]
fn ranges_and_networks() {
    assert_eq!(parse_range("0..1").unwrap(), (0.0, 1.0));
    assert_eq!(parse_range(" -5 .. 5").unwrap(), (-5.0, 5.0));
    for bad in ["1..0", "0..inf", "x..1", "0-1", "NaN..1"] {
        assert!(parse_range(bad).is_err(), "{bad}");
    }
    assert!(parse_net("10.0.0.0/8")
        .unwrap()
        .contains(&"10.2.3.4".parse::<std::net::IpAddr>().unwrap()));
    assert_eq!(parse_net("127.0.0.1").unwrap().prefix_len(), 32);
    assert!(parse_net("::1").is_ok());
    assert!(parse_net("proxy.local").is_err());
    let c = ServeFlags::parse_from(["serve", "--trusted-proxies", "10.0.0.0/8,192.168.1.7"]).config;
    assert_eq!(c.trusted_proxies.len(), 2);
}

#[test]
fn a_public_repository_api_needs_a_token() {
    let mut c = ServeFlags::parse_from(["serve", "--repository-api", "--listen", "0.0.0.0:8080"]).config;
    c.admin_token = None;
    assert!(c.validate().unwrap_err().contains("--repository-api"));
    c.listen = "127.0.0.1:8080".parse().unwrap();
    assert!(
        c.validate().unwrap_err().contains("gRPC listener"),
        "the default gRPC listener is public"
    );
    c.grpc_listen = Listen::Off;
    assert!(c.validate().is_ok(), "loopback without a token is allowed");
    c.listen = "0.0.0.0:8080".parse().unwrap();
    c.admin_token = Some("s3cret".into());
    assert!(c.validate().is_ok());
    assert!(!Config::defaults().repository_api, "off by default");
}

#[test]
fn the_grpc_listener_can_be_turned_off_and_the_repository_api_on() {
    let c = ServeFlags::parse_from(["serve", "--grpc-listen", "off", "--repository-api"]).config;
    assert_eq!(c.grpc_listen, Listen::Off);
    assert!(c.repository_api && c.settings().repository_api);
    let c = ServeFlags::parse_from([
        "serve",
        "--grpc-listen",
        "127.0.0.1:9001",
        "--repository-api=false",
    ])
    .config;
    assert_eq!(c.grpc_listen.addr(), Some("127.0.0.1:9001".parse().unwrap()));
    assert!(!c.repository_api);
    assert!(ServeFlags::try_parse_from(["serve", "--grpc-listen", "8001"]).is_err());
}

#[test]
fn fleet_mode_needs_prometheus_and_consistent_lease_timings() {
    let c = ServeFlags::parse_from(["serve", "--fleet", "kubernetes"]).config;
    assert!(c.validate().unwrap_err().contains("--prometheus-url"));
    let c = ServeFlags::parse_from([
        "serve",
        "--fleet",
        "kubernetes",
        "--prometheus-url",
        "http://127.0.0.1:9090",
        "--pod-name",
        "pod-a",
        "--lease-duration",
        "3s",
        "--lease-renew-deadline",
        "2s",
        "--lease-retry-period",
        "500ms",
    ])
    .config;
    assert!(c.validate().is_ok(), "{:?}", c.validate());
    let f = c.fleet_settings().unwrap();
    assert_eq!(
        (f.pod_name.as_str(), f.timings.retry_period.as_millis()),
        ("pod-a", 500)
    );
    let c = ServeFlags::parse_from([
        "serve",
        "--fleet",
        "kubernetes",
        "--prometheus-url",
        "http://p",
        "--lease-renew-deadline",
        "20s",
    ])
    .config;
    assert!(c.validate().unwrap_err().contains("renew deadline"));
}

#[test]
fn a_public_admin_listener_needs_a_token() {
    let mut c = ServeFlags::parse_from(["serve", "--admin-listen", "0.0.0.0:8081"]).config;
    c.admin_token = None;
    assert!(c.validate().unwrap_err().contains("SWITCHYARD_ADMIN_TOKEN"));
    c.admin_token = Some("s3cret".into());
    assert!(c.validate().is_ok());
}
