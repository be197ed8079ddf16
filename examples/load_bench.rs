//! The load benchmark behind `scripts/bench-load`: `cce-cni-guard serve` against the reference
//! floor (`examples/floor.rs`) on the same machine, in the same run, driven alternately
//! (guard, floor, guard, floor, …) over HTTPS with keep-alive by public load generators:
//! `wrk` with a Lua POST script for HTTP/1.1, `h2load` for HTTP/2. The body is a real
//! ~22 KB DaemonSet UPDATE review as the apiserver sends it.
//!
//! Prints, per protocol and connection count, throughput and p50/p99 latency of both and the
//! guard/floor ratios; the guard's peak RSS; process start to `/readyz` 200. `--json FILE`
//! writes the same figures for machines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const USAGE: &str = "\
usage: load_bench [options]
  --guard PATH          the cce-cni-guard binary (default: next to this one, ../cce-cni-guard)
  --floor PATH          the floor server (default: next to this one, floor)
  --review PATH         the AdmissionReview to send (default: tests/fixtures/review-daemonset-update.json)
  --duration SECONDS    length of one measured run (default 8)
  --rounds N            guard/floor pairs per cell; the median is reported (default 3)
  --connections LIST    comma-separated connection counts (default 1,32,256)
  --protocols LIST      h1, h2 or both (default h1,h2)
  --json FILE           also write the figures as JSON
";

struct Options {
    guard: PathBuf,
    floor: PathBuf,
    review: PathBuf,
    duration: u64,
    rounds: usize,
    connections: Vec<usize>,
    protocols: Vec<String>,
    json: Option<PathBuf>,
}

fn parse_options() -> Result<Options, String> {
    let here = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = here.parent().ok_or("no directory for this binary")?;
    let mut options = Options {
        guard: dir.join("../cce-cni-guard"),
        floor: dir.join("floor"),
        review: PathBuf::from("tests/fixtures/review-daemonset-update.json"),
        duration: 8,
        rounds: 3,
        connections: vec![1, 32, 256],
        protocols: vec!["h1".into(), "h2".into()],
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|e| format!("{flag} {v}: {e}"))
                .and_then(|n| {
                    if n == 0 {
                        Err(format!("{flag} must be at least 1"))
                    } else {
                        Ok(n)
                    }
                })
        };
        match flag.as_str() {
            "--guard" => options.guard = value.into(),
            "--floor" => options.floor = value.into(),
            "--review" => options.review = value.into(),
            "--duration" => options.duration = number(&value)?,
            "--rounds" => options.rounds = number(&value)? as usize,
            "--connections" => {
                options.connections = value
                    .split(',')
                    .map(|v| number(v.trim()).map(|n| n as usize))
                    .collect::<Result<_, _>>()?
            }
            "--protocols" => {
                options.protocols = value.split(',').map(|p| p.trim().to_owned()).collect();
                if let Some(bad) = options.protocols.iter().find(|p| *p != "h1" && *p != "h2") {
                    return Err(format!("--protocols: unknown {bad:?} (h1, h2)"));
                }
            }
            "--json" => options.json = Some(value.into()),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(options)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// A child process killed when dropped, so a failed run leaves no server behind.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Certs {
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(guard: &Path, dir: &Path) -> Result<Certs, String> {
    let output = Command::new(guard)
        .args(["certs", "--service", "bench", "--namespace", "bench"])
        .args(["--dns", "localhost", "--ip", "127.0.0.1", "--out"])
        .arg(dir)
        .output()
        .map_err(|e| format!("{}: {e}", guard.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} certs failed ({}): {}",
            guard.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(Certs {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    })
}

/// Starts `serve` without a cluster and waits for `/readyz`; returns the time that took.
fn start_guard(guard: &Path, certs: &Certs) -> Result<(Server, Duration), String> {
    let port = free_port()?;
    let health = free_port()?;
    let health_addr: SocketAddr = ([127, 0, 0, 1], health).into();
    let started = Instant::now();
    let child = Command::new(guard)
        .args(["--log-level", "warn", "serve", "--no-cluster"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--health-listen")
        .arg(health_addr.to_string())
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", guard.display()))?;
    let mut server = Server {
        name: "guard",
        child,
        addr: ([127, 0, 0, 1], port).into(),
    };
    loop {
        if http_get_status(health_addr, "/readyz") == Some(200) {
            return Ok((server, started.elapsed()));
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("serve exited before it was ready: {status}"));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("serve was not ready within 10 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn start_floor(floor: &Path, certs: &Certs) -> Result<Server, String> {
    let port = free_port()?;
    let child = Command::new(floor)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", floor.display()))?;
    let server = Server {
        name: "floor",
        child,
        addr: ([127, 0, 0, 1], port).into(),
    };
    let started = Instant::now();
    while TcpStream::connect(server.addr).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the floor server did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(server)
}

/// One measured run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

const WRK_SCRIPT: &str = r#"
local f = assert(io.open(os.getenv("BENCH_REVIEW"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

fn run_wrk(
    target: &Server,
    connections: usize,
    options: &Options,
    script: &Path,
) -> Result<Run, String> {
    let threads = connections.min(2);
    let output = Command::new("wrk")
        .env("BENCH_REVIEW", &options.review)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", options.duration))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(format!("https://{}/validate", target.addr))
        .output()
        .map_err(|e| format!("wrk: {e} (install it: apt-get install wrk)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .ok_or_else(|| {
            format!(
                "wrk printed no summary: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("wrk summary {line}: {e}"))?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Run {
        requests_per_second: f("requests") / (f("duration_us") / 1e6),
        p50_ms: f("p50_us") / 1e3,
        p99_ms: f("p99_us") / 1e3,
        errors: v["errors"].as_u64().unwrap_or(0),
    })
}

/// h2load prints no percentiles, so its per-request log (`--log-file`) gives them.
fn run_h2load(
    target: &Server,
    connections: usize,
    options: &Options,
    log: &Path,
) -> Result<Run, String> {
    let threads = connections.min(2);
    let output = Command::new("h2load")
        .arg(format!("--threads={threads}"))
        .arg(format!("--clients={connections}"))
        .arg("--max-concurrent-streams=1")
        .arg(format!("--duration={}", options.duration))
        .arg("--warm-up-time=1")
        .arg("--data")
        .arg(&options.review)
        .arg("--header=content-type: application/json")
        .arg("--log-file")
        .arg(log)
        .arg(format!("https://{}/validate", target.addr))
        .output()
        .map_err(|e| format!("h2load: {e} (install it: apt-get install nghttp2-client)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // "finished in 8.00s, 5270.12 req/s, 1.23MB/s"
    let rps = stdout
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.trim_end_matches(" req/s").parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "h2load printed no throughput: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    // "requests: 42162 total, 42162 started, 42162 done, 42162 succeeded, 0 failed, 0 errored, 0 timeout"
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("requests:"))
        .map(|l| {
            ["failed", "errored", "timeout"]
                .iter()
                .filter_map(|word| {
                    l.split(", ")
                        .find(|part| part.ends_with(word))
                        .and_then(|part| part.split_whitespace().next())
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .sum()
        })
        .unwrap_or(0);
    let mut text = String::new();
    std::fs::File::open(log)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", log.display()))?;
    // Each line: start time (µs since epoch), status, request duration (µs).
    let mut durations: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    durations.sort_unstable();
    let percentile = |p: f64| {
        if durations.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * durations.len() as f64).ceil() as usize;
        durations[rank.clamp(1, durations.len()) - 1] as f64 / 1e3
    };
    Ok(Run {
        requests_per_second: rps,
        p50_ms: percentile(50.0),
        p99_ms: percentile(99.0),
        errors: failed,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn summarise(runs: &[Run]) -> Value {
    json!({
        "requests_per_second": median(runs.iter().map(|r| r.requests_per_second).collect()),
        "p50_ms": median(runs.iter().map(|r| r.p50_ms).collect()),
        "p99_ms": median(runs.iter().map(|r| r.p99_ms).collect()),
        "errors": runs.iter().map(|r| r.errors).sum::<u64>(),
        "runs": runs.len(),
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("load_bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let options = parse_options()?;
    for (tool, needed) in [
        ("wrk", options.protocols.iter().any(|p| p == "h1")),
        ("h2load", options.protocols.iter().any(|p| p == "h2")),
    ] {
        if needed && Command::new(tool).arg("--version").output().is_err() {
            return Err(format!(
                "{tool} is not installed (apt-get install wrk nghttp2-client)"
            ));
        }
    }
    let review =
        std::fs::read(&options.review).map_err(|e| format!("{}: {e}", options.review.display()))?;
    serde_json::from_slice::<Value>(&review)
        .map_err(|e| format!("{} is not JSON: {e}", options.review.display()))?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let certs = make_certs(&options.guard, work.path())?;
    let script = work.path().join("post.lua");
    std::fs::write(&script, WRK_SCRIPT).map_err(|e| e.to_string())?;

    // Start to ready, a few times: the first start also pays for a cold page cache.
    let mut ready_ms = Vec::new();
    for _ in 0..5 {
        let (server, took) = start_guard(&options.guard, &certs)?;
        ready_ms.push(took.as_secs_f64() * 1e3);
        drop(server);
    }
    println!(
        "machine: {}\nreview: {} ({} bytes), {} s per run, {} rounds (median reported)\n",
        machine(),
        options.review.display(),
        review.len(),
        options.duration,
        options.rounds
    );
    println!(
        "start to /readyz 200 (no cluster): median {:.1} ms, min {:.1} ms over {} starts\n",
        median(ready_ms.clone()),
        ready_ms.iter().copied().fold(f64::INFINITY, f64::min),
        ready_ms.len()
    );

    let (guard, _) = start_guard(&options.guard, &certs)?;
    let floor = start_floor(&options.floor, &certs)?;
    println!(
        "{:<5} {:>5}  {:>10} {:>10} {:>6}  {:>8} {:>8} {:>6}  {:>8} {:>8} {:>6}",
        "proto",
        "conns",
        "guard rps",
        "floor rps",
        "ratio",
        "guard p50",
        "floor",
        "ratio",
        "guard p99",
        "floor",
        "ratio"
    );
    let mut cells = Vec::new();
    for protocol in &options.protocols {
        for &connections in &options.connections {
            let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
            for round in 0..options.rounds {
                // A B A B …, with the order flipped every other round so neither side always
                // runs on a machine warmed by the other.
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for index in order {
                    let target = if index == 0 { &guard } else { &floor };
                    let log = work.path().join(format!("h2load-{}.log", target.name));
                    let run = match protocol.as_str() {
                        "h1" => run_wrk(target, connections, &options, &script)?,
                        _ => run_h2load(target, connections, &options, &log)?,
                    };
                    runs[index].push(run);
                }
            }
            let g = summarise(&runs[0]);
            let f = summarise(&runs[1]);
            let ratio = |k: &str| {
                let (a, b) = (g[k].as_f64().unwrap_or(0.0), f[k].as_f64().unwrap_or(0.0));
                if b > 0.0 { a / b } else { 0.0 }
            };
            println!(
                "{:<5} {:>5}  {:>10.0} {:>10.0} {:>6.3}  {:>8.3} {:>8.3} {:>6.3}  {:>8.3} {:>8.3} {:>6.3}{}",
                protocol,
                connections,
                g["requests_per_second"].as_f64().unwrap_or(0.0),
                f["requests_per_second"].as_f64().unwrap_or(0.0),
                ratio("requests_per_second"),
                g["p50_ms"].as_f64().unwrap_or(0.0),
                f["p50_ms"].as_f64().unwrap_or(0.0),
                ratio("p50_ms"),
                g["p99_ms"].as_f64().unwrap_or(0.0),
                f["p99_ms"].as_f64().unwrap_or(0.0),
                ratio("p99_ms"),
                match (g["errors"].as_u64(), f["errors"].as_u64()) {
                    (Some(0), Some(0)) => String::new(),
                    (a, b) => format!("  errors guard {} floor {}", a.unwrap_or(0), b.unwrap_or(0)),
                }
            );
            cells.push(json!({
                "protocol": protocol,
                "connections": connections,
                "guard": g,
                "floor": f,
                "throughput_ratio": ratio("requests_per_second"),
                "p50_ratio": ratio("p50_ms"),
                "p99_ratio": ratio("p99_ms"),
            }));
        }
    }
    let guard_rss = guard.peak_rss_kib();
    let floor_rss = floor.peak_rss_kib();
    let mib = |k: Option<u64>| {
        k.map_or("unknown".to_owned(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!(
        "\npeak RSS: guard {}, floor {}",
        mib(guard_rss),
        mib(floor_rss)
    );
    let binary = std::fs::metadata(&options.guard).map(|m| m.len()).ok();
    if let Some(bytes) = binary {
        println!("guard binary: {bytes} bytes ({:.1} MB)", bytes as f64 / 1e6);
    }
    if let Some(path) = &options.json {
        let report = json!({
            "machine": machine(),
            "review_bytes": review.len(),
            "duration_seconds": options.duration,
            "rounds": options.rounds,
            "start_to_ready_ms": { "median": median(ready_ms.clone()), "all": ready_ms },
            "cells": cells,
            "peak_rss_kib": { "guard": guard_rss, "floor": floor_rss },
            "guard_binary_bytes": binary,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
